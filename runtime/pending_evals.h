// Eval losses rank 0 computed beside training (JobSpec.eval_beside_training), on their way to
// the coordinator with later round reports.
//
// A report can be lost with a crashed coordinator, and a round can fail after its report went
// out; the retried round's report must then carry the losses again. So a loss stays here, and
// goes with every report, until a round whose report carried it commits with this peer's state
// (the coordinator read that report). The coordinator takes a repeated loss once
// (CoordinatorStore::RecordBesideEval). Used by the peer's training thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "proto/tributary.pb.h"

namespace tributary::runtime {

class PendingEvals {
 public:
  void Add(uint64_t round, double loss);
  // Adds every loss not yet acknowledged to `report`, the report of round `reporting`.
  void AttachTo(v1::RoundReport& report, uint64_t reporting);
  // Round `round` committed with our state: the losses its report carried are acknowledged.
  void Committed(uint64_t round);
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    uint64_t round = 0;
    double loss = 0;
    std::optional<uint64_t> carried_by;  // the last round whose report carried it
  };
  std::vector<Entry> entries_;
};

}  // namespace tributary::runtime
