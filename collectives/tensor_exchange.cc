#include "collectives/tensor_exchange.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <utility>

#include "net/frame.h"

namespace tributary::collectives {
namespace {
constexpr auto kUnwakeablePoll = std::chrono::milliseconds(5);
}  // namespace

Status CheckTensorHeader(const v1::Envelope& env, const ExpectedTensor& e, uint32_t sender) {
  TRIB_RETURN_IF_ERROR(net::CheckEnvelope(env, e.job_id));
  TRIB_RETURN_IF_ERROR(net::CheckTensorKind(env, e.tag, e.numel));
  const v1::TensorHeader& h = env.tensor();
  if (h.offset() != sender) {
    return ProtocolError("message claims to be rank " + std::to_string(h.offset()) +
                         "'s contribution on rank " + std::to_string(sender) + "'s connection");
  }
  const bool size_ok = e.exact ? h.nbytes() == e.max_bytes : h.nbytes() > 0 && h.nbytes() <= e.max_bytes;
  if (!size_ok) {
    return ProtocolError("payload of " + std::to_string(h.nbytes()) + " bytes, expected " +
                         (e.exact ? "exactly " : "at most ") + std::to_string(e.max_bytes));
  }
  return Status::Ok();
}

ArrivalBox::ArrivalBox() : wake_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}

ArrivalBox::~ArrivalBox() {
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void ArrivalBox::ExpectMessage(std::shared_ptr<net::Connection> conn, uint32_t peer,
                               std::shared_ptr<const ExpectedTensor> expected, Deadline deadline) {
  due_.push_back({std::move(conn), peer, std::move(expected), deadline});
}

Arrival ArrivalBox::Read(const Due& due) {
  Result<v1::Envelope> env = due.conn->Receive(due.deadline);
  if (!env.ok()) return {.peer = due.peer, .status = env.status()};
  if (env->has_error() && net::CheckEnvelope(*env, due.expected->job_id).ok()) {
    return {.peer = due.peer, .relayed = env->error().message()};
  }
  if (Status valid = CheckTensorHeader(*env, *due.expected, due.peer); !valid.ok()) {
    return {.peer = due.peer, .status = valid};
  }
  std::span<std::byte> into;
  if (due.expected->exact) {
    into = std::as_writable_bytes(std::span(floats[due.peer].get(), due.expected->numel));
  } else {
    payloads[due.peer].resize(env->tensor().nbytes());
    into = std::as_writable_bytes(std::span(payloads[due.peer]));
  }
  return {.peer = due.peer, .status = due.conn->ReceiveRaw(into, due.deadline)};
}

void ArrivalBox::Wake() {
  if (polling_ && wake_fd_ >= 0) {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof(one));
  }
}

void ArrivalBox::ExpectSendsTo(uint32_t world, const std::vector<uint32_t>& targets) {
  std::lock_guard lock(mu_);
  sent_to_.assign(world, true);
  for (uint32_t t : targets) sent_to_[t] = false;
  sends_wanted_ = static_cast<uint32_t>(targets.size());
  sends_done_ = 0;
}

void ArrivalBox::Push(Arrival a) {
  {
    std::lock_guard lock(mu_);
    arrivals_.push_back(std::move(a));
    Wake();
  }
  cv_.notify_all();
}

void ArrivalBox::SendDone(uint32_t peer) {
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    sent_to_[peer] = true;
    ++sends_done_;
    wake = awaiting_sends_;
    if (wake) Wake();
  }
  if (wake) cv_.notify_all();
}

std::deque<Arrival> ArrivalBox::Take(Deadline until, bool wait_for_sends, bool* all_sent) {
  std::unique_lock lock(mu_);
  awaiting_sends_ = wait_for_sends;
  auto done = [&] { return !arrivals_.empty() || (wait_for_sends && sends_done_ >= sends_wanted_); };
  std::vector<net::Connection*> conns;  // due_'s, in its order
  for (const Due& d : due_) conns.push_back(d.conn.get());
  while (!done() && !due_.empty() && Clock::now() < until) {
    polling_ = true;
    lock.unlock();
    // Without an eventfd (its creation failed) a send report cannot interrupt the poll, so it
    // polls in short slices instead and sees reports at the next one.
    const Deadline slice = wake_fd_ >= 0 ? until : std::min(until, DeadlineAfter(kUnwakeablePoll));
    std::vector<size_t> ready = net::Connection::WaitReadable(conns, wake_fd_, slice);
    if (wake_fd_ >= 0) {
      uint64_t drained = 0;
      [[maybe_unused]] ssize_t n = ::read(wake_fd_, &drained, sizeof(drained));
    }
    std::deque<Arrival> read;
    for (size_t i : ready) read.push_back(Read(due_[i]));
    for (auto it = ready.rbegin(); it != ready.rend(); ++it) {
      due_.erase(due_.begin() + static_cast<ptrdiff_t>(*it));
      conns.erase(conns.begin() + static_cast<ptrdiff_t>(*it));
    }
    lock.lock();
    polling_ = false;
    for (Arrival& a : read) arrivals_.push_back(std::move(a));
  }
  if (due_.empty()) cv_.wait_until(lock, until, done);
  awaiting_sends_ = false;
  *all_sent = sends_done_ >= sends_wanted_;
  return std::exchange(arrivals_, {});
}

bool ArrivalBox::AllSent() {
  std::lock_guard lock(mu_);
  return sends_done_ >= sends_wanted_;
}

std::optional<uint32_t> ArrivalBox::FirstUnsent() {
  std::lock_guard lock(mu_);
  for (uint32_t p = 0; p < sent_to_.size(); ++p) {
    if (!sent_to_[p]) return p;
  }
  return std::nullopt;
}

void SendTensorTo(const std::shared_ptr<ArrivalBox>& box, net::Connection& conn, uint32_t to,
                  std::shared_ptr<const std::string> frame, std::span<const std::byte> tail,
                  std::shared_ptr<const void> keep) {
  conn.AsyncSend(std::move(frame), tail, [box, to, keep = std::move(keep)](Status st) {
    if (!st.ok()) return box->Push({.peer = to, .sending = true, .status = std::move(st)});
    box->SendDone(to);
  });
}

Status ArrivalFailure(const Mesh& mesh, const Arrival& a, std::optional<PeerFailure>* failure) {
  if (a.relayed) {
    *failure = mesh.FailureOfRelayedAbort(a.peer, *a.relayed);
    return Aborted(mesh.Describe(a.peer) + " aborted the collective: " + *a.relayed);
  }
  if (!a.status.ok()) {
    *failure = mesh.FailureOf(a.peer);
    return a.status.WithContext((a.sending ? "sending to " : "from ") + mesh.Describe(a.peer));
  }
  return Status::Ok();
}

Result<std::shared_ptr<const std::string>> TensorFrame(const std::string& job_id,
                                                       const std::string& tag, uint64_t numel,
                                                       uint32_t sender, uint64_t nbytes) {
  v1::Envelope env = net::MakeEnvelope(job_id);
  v1::TensorHeader* h = env.mutable_tensor();
  h->set_tag(tag);
  h->set_dtype(v1::DTYPE_F32);
  h->set_numel(numel);
  h->set_offset(sender);
  h->set_nbytes(nbytes);
  TRIB_ASSIGN_OR_RETURN(std::string frame, net::EncodeFrame(env));
  return std::make_shared<const std::string>(std::move(frame));
}

Status AbortFailedCall(Mesh& mesh, Status st, std::optional<PeerFailure> blamed,
                       const FormControl* control) {
  if (control && control->IsCancelled() && (blamed || st.code() != StatusCode::kAborted)) {
    st = Aborted(std::string(kCollectiveSuperseded) + " (" + st.message() + ")");
    blamed.reset();
  }
  mesh.Abort(st, blamed);
  return st;
}

}  // namespace tributary::collectives
