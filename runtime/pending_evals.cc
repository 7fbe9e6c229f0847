#include "runtime/pending_evals.h"

#include <algorithm>

namespace tributary::runtime {

void PendingEvals::Add(uint64_t round, double loss) {
  entries_.push_back({.round = round, .loss = loss});
}

void PendingEvals::AttachTo(v1::RoundReport& report, uint64_t reporting) {
  for (Entry& e : entries_) {
    v1::EarlierEval* out = report.add_earlier_evals();
    out->set_round(e.round);
    out->set_loss(e.loss);
    e.carried_by = reporting;
  }
}

void PendingEvals::Committed(uint64_t round) {
  // A report of round r that committed was read, and so was every earlier report this session
  // sent over the same connection; a loss first carried by a later report is still in flight.
  std::erase_if(entries_, [round](const Entry& e) { return e.carried_by && *e.carried_by <= round; });
}

}  // namespace tributary::runtime
