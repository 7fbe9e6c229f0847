#include "benchmarks/wan/wan_emulator.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <mutex>
#include <queue>
#include <spdlog/spdlog.h>

#include "benchmarks/wan/link_model.h"
#include "benchmarks/wan/netns.h"

namespace tributary::wan {
namespace {

// Packets due within this much of now go out in the same pass: it saves a wake-up per packet
// at high rates and is far below any delay a WAN benchmark cares about.
constexpr int64_t kEarlyDeliveryNs = 10'000;
// Packets read from one TUN per pass, so one busy peer cannot starve the others' deliveries.
constexpr int kReadBurst = 32;
// Bytes the emulator may hold (queued or in flight) before it drops new packets.
constexpr int64_t kMaxInflightBytes = int64_t{512} << 20;
// Read ring of each TUN (packets the kernel holds until the loop reads them).
constexpr int kTunTxQueueLen = 10000;
constexpr uint32_t kStopTag = 0xffffffffu;
constexpr uint32_t kUpdateTag = 0xfffffffeu;

int64_t NowNs() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// Buffers of one MTU, recycled; allocated lazily up to a byte budget.
class PacketPool {
 public:
  PacketPool(size_t buffer_bytes, int64_t budget_bytes)
      : buffer_bytes_(buffer_bytes),
        max_buffers_(static_cast<size_t>(budget_bytes / static_cast<int64_t>(buffer_bytes))) {}

  int32_t Get() {
    if (free_.empty()) {
      if (storage_.size() >= max_buffers_) return -1;
      storage_.push_back(std::make_unique<uint8_t[]>(buffer_bytes_));
      return static_cast<int32_t>(storage_.size() - 1);
    }
    int32_t id = free_.back();
    free_.pop_back();
    return id;
  }
  void Put(int32_t id) { free_.push_back(id); }
  uint8_t* data(int32_t id) { return storage_[static_cast<size_t>(id)].get(); }
  size_t buffer_bytes() const { return buffer_bytes_; }

 private:
  size_t buffer_bytes_;
  size_t max_buffers_;
  std::vector<std::unique_ptr<uint8_t[]>> storage_;
  std::vector<int32_t> free_;
};

// Opens a TUN device in the calling thread's namespace and gives it `addr`/`prefix`, the MTU,
// and state UP; also brings up the namespace's loopback.
Result<int> OpenConfiguredTun(const std::string& ifname, uint32_t addr, int prefix, int mtu) {
  int fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return FailedPrecondition(Errno("cannot open /dev/net/tun"));
  ifreq ifr{};
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
  if (::ioctl(fd, TUNSETIFF, &ifr) < 0) {
    Status st = IoError(Errno("TUNSETIFF " + ifname));
    ::close(fd);
    return st;
  }
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    ::close(fd);
    return IoError(Errno("socket"));
  }
  auto request = [&](const std::string& dev, unsigned long req, auto&& fill,
                     const char* what) -> Status {
    ifreq r{};
    std::strncpy(r.ifr_name, dev.c_str(), IFNAMSIZ - 1);
    fill(r);
    if (::ioctl(s, req, &r) < 0) return IoError(Errno(std::string(what) + " " + dev));
    return Status::Ok();
  };
  auto inet = [](uint32_t host_order) {
    return [host_order](ifreq& r) {
      auto* sin = reinterpret_cast<sockaddr_in*>(&r.ifr_addr);
      sin->sin_family = AF_INET;
      sin->sin_addr.s_addr = htonl(host_order);
    };
  };
  auto bring_up = [&](const std::string& dev) -> Status {
    ifreq r{};
    std::strncpy(r.ifr_name, dev.c_str(), IFNAMSIZ - 1);
    if (::ioctl(s, SIOCGIFFLAGS, &r) < 0) return IoError(Errno("SIOCGIFFLAGS " + dev));
    r.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (::ioctl(s, SIOCSIFFLAGS, &r) < 0) return IoError(Errno("SIOCSIFFLAGS " + dev));
    return Status::Ok();
  };
  const uint32_t mask = ~uint32_t{0} << (32 - prefix);
  Status st = request(ifname, SIOCSIFADDR, inet(addr), "SIOCSIFADDR");
  if (st.ok()) st = request(ifname, SIOCSIFNETMASK, inet(mask), "SIOCSIFNETMASK");
  if (st.ok()) st = request(ifname, SIOCSIFMTU, [mtu](ifreq& r) { r.ifr_mtu = mtu; }, "SIOCSIFMTU");
  if (st.ok()) {
    st = request(ifname, SIOCSIFTXQLEN, [](ifreq& r) { r.ifr_qlen = kTunTxQueueLen; },
                 "SIOCSIFTXQLEN");
  }
  if (st.ok()) st = bring_up(ifname);
  if (st.ok()) st = bring_up("lo");
  ::close(s);
  if (!st.ok()) {
    ::close(fd);
    return st;
  }
  return fd;
}

// A NETLINK_ROUTE socket of the calling thread's namespace, for TunDropped.
Result<int> OpenRouteNetlink() {
  int fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return IoError(Errno("netlink socket"));
  timeval tv{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

// tx_dropped of interface `ifindex`: packets the TUN discarded because its read ring was full.
Result<uint64_t> TunDropped(int netlink_fd, int ifindex) {
  struct {
    nlmsghdr nh;
    ifinfomsg ifi;
  } req{};
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(ifinfomsg));
  req.nh.nlmsg_type = RTM_GETLINK;
  req.nh.nlmsg_flags = NLM_F_REQUEST;
  req.ifi.ifi_family = AF_UNSPEC;
  req.ifi.ifi_index = ifindex;
  if (::send(netlink_fd, &req, req.nh.nlmsg_len, 0) < 0) return IoError(Errno("netlink send"));
  alignas(nlmsghdr) char buf[32768];
  ssize_t n = ::recv(netlink_fd, buf, sizeof(buf), 0);
  if (n < 0) return IoError(Errno("netlink recv"));
  int left = static_cast<int>(n);
  for (auto* nh = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(nh, left); nh = NLMSG_NEXT(nh, left)) {
    if (nh->nlmsg_type == NLMSG_ERROR) return IoError("netlink RTM_GETLINK failed");
    if (nh->nlmsg_type != RTM_NEWLINK) continue;
    auto* ifi = static_cast<ifinfomsg*>(NLMSG_DATA(nh));
    int len = static_cast<int>(IFLA_PAYLOAD(nh));
    for (auto* a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
      if (a->rta_type != IFLA_STATS64) continue;
      rtnl_link_stats64 stats{};
      std::memcpy(&stats, RTA_DATA(a), std::min<size_t>(sizeof(stats), RTA_PAYLOAD(a)));
      return static_cast<uint64_t>(stats.tx_dropped);
    }
  }
  return NotFound("no IFLA_STATS64 in the netlink answer");
}

// Writes a sysctl of the calling thread's network namespace (/proc/sys/net resolves per thread).
Status WriteSysctl(const std::string& path, const std::string& value) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return IoError(Errno("open " + path));
  const ssize_t n = ::write(fd, value.data(), value.size());
  ::close(fd);
  if (n != static_cast<ssize_t>(value.size())) return IoError(Errno("write " + path));
  return Status::Ok();
}

struct AtomicLinkStats {
  std::atomic<uint64_t> packets{0}, bytes{0}, dropped_queue{0}, dropped_loss{0};
};

void Bump(std::atomic<uint64_t>& c, uint64_t by = 1) {
  // Single writer (the loop thread): a relaxed load+store is enough and avoids a locked add.
  c.store(c.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The event loop: one thread, epoll over every TUN plus two eventfds (stop, link updates), and a
// min-heap of packets ordered by delivery time; epoll_pwait2's nanosecond timeout wakes it for
// the earliest one.

class WanEmulator::Forwarder {
 public:
  Forwarder(const WanConfig& config, std::vector<int> tun_fds)
      : n_(config.num_peers),
        realtime_(config.realtime),
        tun_fds_(std::move(tun_fds)),
        pool_(static_cast<size_t>(config.mtu), kMaxInflightBytes),
        stats_(static_cast<size_t>(n_ * n_)) {
    subnet_ = *ParseSubnet(config.subnet);
    mask_ = ~uint32_t{0} << (32 - subnet_.prefix);
    links_.reserve(static_cast<size_t>(n_ * n_));
    for (int i = 0; i < n_; ++i) {
      for (int j = 0; j < n_; ++j) {
        // Each link draws from its own stream, so one link's loss pattern does not depend on
        // what traffic the other links carry.
        links_.emplace_back(config.link(i, j), config.seed * 1'000'003 + static_cast<uint64_t>(i * n_ + j));
      }
    }
  }

  ~Forwarder() {
    for (int fd : {epoll_fd_, stop_fd_, update_fd_}) {
      if (fd >= 0) ::close(fd);
    }
  }

  Status Init() {
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    update_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (epoll_fd_ < 0 || stop_fd_ < 0 || update_fd_ < 0) return IoError(Errno("epoll/eventfd"));
    TRIB_RETURN_IF_ERROR(Watch(stop_fd_, kStopTag));
    TRIB_RETURN_IF_ERROR(Watch(update_fd_, kUpdateTag));
    for (int i = 0; i < n_; ++i) TRIB_RETURN_IF_ERROR(Watch(tun_fds_[static_cast<size_t>(i)], static_cast<uint32_t>(i)));
    return Status::Ok();
  }

  void RequestStop() {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(stop_fd_, &one, sizeof(one));
  }

  void QueueUpdate(int from, int to, const LinkParams& p) {
    {
      std::lock_guard<std::mutex> lock(updates_mu_);
      updates_.push_back({static_cast<size_t>(from * n_ + to), p});
    }
    uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(update_fd_, &one, sizeof(one));
  }

  EmulatorStats Snapshot() const {
    EmulatorStats s;
    s.links.resize(stats_.size());
    for (size_t k = 0; k < stats_.size(); ++k) {
      s.links[k].packets = stats_[k].packets.load(std::memory_order_relaxed);
      s.links[k].bytes = stats_[k].bytes.load(std::memory_order_relaxed);
      s.links[k].dropped_queue = stats_[k].dropped_queue.load(std::memory_order_relaxed);
      s.links[k].dropped_loss = stats_[k].dropped_loss.load(std::memory_order_relaxed);
    }
    s.unroutable = unroutable_.load(std::memory_order_relaxed);
    s.buffer_exhausted = buffer_exhausted_.load(std::memory_order_relaxed);
    s.write_errors = write_errors_.load(std::memory_order_relaxed);
    return s;
  }

  void Run() {
    ::prctl(PR_SET_NAME, "wan-forward");
    ::prctl(PR_SET_TIMERSLACK, 1UL);  // the default 50 µs slack would blur every delay
    if (realtime_) {
      sched_param sp{};
      sp.sched_priority = 10;
      if (int rc = ::pthread_setschedparam(::pthread_self(), SCHED_FIFO, &sp); rc != 0) {
        spdlog::warn("wan emulator: no SCHED_FIFO for the forwarding thread ({}); delays may "
                     "stretch when the machine is busy", std::strerror(rc));
      }
    }
    epoll_event events[64];
    for (;;) {
      timespec timeout{};
      timespec* timeout_ptr = nullptr;
      if (!pending_.empty()) {
        const int64_t wait = std::max<int64_t>(0, pending_.top().due_ns - NowNs());
        timeout.tv_sec = wait / 1'000'000'000;
        timeout.tv_nsec = wait % 1'000'000'000;
        timeout_ptr = &timeout;
      }
      const int n = ::epoll_pwait2(epoll_fd_, events, 64, timeout_ptr, nullptr);
      if (n < 0 && errno != EINTR) {
        spdlog::error("wan emulator: epoll_pwait2 failed: {}", std::strerror(errno));
        return;
      }
      for (int k = 0; k < n; ++k) {
        const uint32_t tag = events[k].data.u32;
        if (tag == kStopTag) return;
        if (tag == kUpdateTag) {
          ApplyUpdates();
        } else {
          ReadBurst(static_cast<int>(tag));
        }
      }
      DeliverDue();
    }
  }

 private:
  struct Packet {
    int64_t due_ns;
    uint64_t seq;  // ties keep arrival order
    int32_t buffer;
    uint32_t len;
    int32_t from, to;
  };
  struct Later {
    bool operator()(const Packet& a, const Packet& b) const {
      return a.due_ns != b.due_ns ? a.due_ns > b.due_ns : a.seq > b.seq;
    }
  };

  Status Watch(int fd, uint32_t tag) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = tag;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) return IoError(Errno("epoll_ctl"));
    return Status::Ok();
  }

  void ApplyUpdates() {
    uint64_t count;
    [[maybe_unused]] ssize_t r = ::read(update_fd_, &count, sizeof(count));
    std::lock_guard<std::mutex> lock(updates_mu_);
    for (const auto& [index, params] : updates_) links_[index].Reconfigure(params);
    updates_.clear();
  }

  // Destination peer of an IPv4 packet, or -1.
  int Route(const uint8_t* p, ssize_t len, int from) const {
    if (len < 20 || (p[0] >> 4) != 4) return -1;
    uint32_t dst;
    std::memcpy(&dst, p + 16, 4);
    dst = ntohl(dst);
    if ((dst & mask_) != subnet_.base) return -1;
    const int64_t host = static_cast<int64_t>(dst - subnet_.base);
    if (host < 1 || host > n_ || host - 1 == from) return -1;
    return static_cast<int>(host - 1);
  }

  void ReadBurst(int from) {
    const int fd = tun_fds_[static_cast<size_t>(from)];
    for (int k = 0; k < kReadBurst; ++k) {
      int32_t buffer = pool_.Get();
      uint8_t* data = buffer >= 0 ? pool_.data(buffer) : scratch_;
      const size_t cap = buffer >= 0 ? pool_.buffer_bytes() : sizeof(scratch_);
      const ssize_t len = ::read(fd, data, cap);
      if (len <= 0) {
        if (buffer >= 0) pool_.Put(buffer);
        return;  // EAGAIN: drained
      }
      if (buffer < 0) {
        Bump(buffer_exhausted_);
        continue;
      }
      const int to = Route(data, len, from);
      if (to < 0) {
        Bump(unroutable_);
        pool_.Put(buffer);
        continue;
      }
      const size_t index = static_cast<size_t>(from * n_ + to);
      const Admission a = links_[index].Admit(NowNs(), static_cast<uint32_t>(len));
      if (a.verdict != Verdict::kDeliver) {
        Bump(a.verdict == Verdict::kDropQueue ? stats_[index].dropped_queue
                                              : stats_[index].dropped_loss);
        pool_.Put(buffer);
        continue;
      }
      pending_.push({a.deliver_at_ns, next_seq_++, buffer, static_cast<uint32_t>(len), from, to});
    }
  }

  void DeliverDue() {
    const int64_t horizon = NowNs() + kEarlyDeliveryNs;
    while (!pending_.empty() && pending_.top().due_ns <= horizon) {
      const Packet p = pending_.top();
      pending_.pop();
      const ssize_t w = ::write(tun_fds_[static_cast<size_t>(p.to)], pool_.data(p.buffer), p.len);
      AtomicLinkStats& s = stats_[static_cast<size_t>(p.from * n_ + p.to)];
      if (w == static_cast<ssize_t>(p.len)) {
        Bump(s.packets);
        Bump(s.bytes, p.len);
      } else {
        Bump(write_errors_);
      }
      pool_.Put(p.buffer);
    }
  }

  const int n_;
  const bool realtime_;
  Subnet subnet_;
  uint32_t mask_ = 0;
  std::vector<int> tun_fds_;  // owned by WanEmulator
  PacketPool pool_;
  std::vector<LinkModel> links_;
  std::vector<AtomicLinkStats> stats_;
  std::atomic<uint64_t> unroutable_{0}, buffer_exhausted_{0}, write_errors_{0};
  std::priority_queue<Packet, std::vector<Packet>, Later> pending_;
  uint64_t next_seq_ = 0;
  uint8_t scratch_[65536];
  int epoll_fd_ = -1, stop_fd_ = -1, update_fd_ = -1;
  std::mutex updates_mu_;
  std::vector<std::pair<size_t, LinkParams>> updates_;
};

// ---------------------------------------------------------------------------------------------

Status WanEmulator::CheckPrerequisites() { return CheckPrivileges(); }

WanEmulator::WanEmulator(const WanConfig& config) : config_(config) {}

WanEmulator::~WanEmulator() { Stop(); }

Result<std::unique_ptr<WanEmulator>> WanEmulator::Start(const WanConfig& config) {
  TRIB_RETURN_IF_ERROR(ValidateConfig(config));
  TRIB_RETURN_IF_ERROR(CheckPrivileges());
  std::unique_ptr<WanEmulator> emu(new WanEmulator(config));
  Status st = emu->Setup();
  if (!st.ok()) {
    emu->Stop();
    return st.WithContext("cannot start the WAN emulator");
  }
  return emu;
}

Status WanEmulator::Setup() {
  run_id_ = NextRunId(config_.name_prefix);
  if (config_.handle_signals) InstallSignalCleanup();
  armed_paths_.push_back(std::string(kOwnerDir) + "/" + run_id_);
  ArmSignalCleanup(armed_paths_.back());
  TRIB_RETURN_IF_ERROR(WriteOwnerRecord(run_id_));
  for (int i = 0; i < config_.num_peers; ++i) TRIB_RETURN_IF_ERROR(SetupPeer(i));
  forwarder_ = std::make_unique<Forwarder>(config_, tun_fds_);
  TRIB_RETURN_IF_ERROR(forwarder_->Init());
  loop_ = std::thread([f = forwarder_.get()] { f->Run(); });
  return Status::Ok();
}

Status WanEmulator::SetupPeer(int peer) {
  const std::string name = Namespace(peer);
  // Armed before it exists, so a signal during creation still removes it.
  armed_paths_.push_back(std::string(kNetnsDir) + "/" + name);
  ArmSignalCleanup(armed_paths_.back());
  TRIB_RETURN_IF_ERROR(CreateNamedNetns(name));
  created_.push_back(name);
  const Subnet subnet = *ParseSubnet(config_.subnet);
  // Opened inside the namespace; the descriptors stay bound to it after the helper thread ends.
  int fd = -1, netlink = -1, ifindex = 0;
  Status st = RunInNetns(name, [&]() -> Status {
    TRIB_ASSIGN_OR_RETURN(fd, OpenConfiguredTun(InterfaceName(), subnet.base + peer + 1,
                                                subnet.prefix, config_.mtu));
    ifindex = static_cast<int>(::if_nametoindex(InterfaceName().c_str()));
    if (ifindex <= 0) return IoError(Errno("if_nametoindex " + InterfaceName()));
    TRIB_ASSIGN_OR_RETURN(netlink, OpenRouteNetlink());
    if (config_.tcp_buffer_bytes > 0) {
      const std::string max = std::to_string(config_.tcp_buffer_bytes);
      TRIB_RETURN_IF_ERROR(WriteSysctl("/proc/sys/net/ipv4/tcp_rmem", "4096 131072 " + max));
      TRIB_RETURN_IF_ERROR(WriteSysctl("/proc/sys/net/ipv4/tcp_wmem", "4096 16384 " + max));
    }
    return Status::Ok();
  });
  if (fd >= 0) tun_fds_.push_back(fd);  // closed by Stop, also on failure
  if (!st.ok()) return st;
  netlink_fds_.push_back(netlink);
  ifindexes_.push_back(ifindex);
  return Status::Ok();
}

void WanEmulator::Stop() {
  if (stopped_) return;
  stopped_ = true;
  if (forwarder_) forwarder_->RequestStop();
  if (loop_.joinable()) loop_.join();
  for (int fd : tun_fds_) ::close(fd);
  {
    std::lock_guard<std::mutex> lock(netlink_mu_);
    for (int fd : netlink_fds_) ::close(fd);
    netlink_fds_.clear();
  }
  for (const auto& name : created_) {
    Status st = RemoveNamedNetns(name);
    if (!st.ok()) spdlog::warn("wan emulator: {}", st.ToString());
  }
  if (!run_id_.empty()) RemoveOwnerRecord(run_id_);
  for (const auto& path : armed_paths_) DisarmSignalCleanup(path);
}

std::string WanEmulator::Namespace(int peer) const { return PeerNamespace(run_id_, peer); }

std::string WanEmulator::Address(int peer) const {
  return FormatIpv4(ParseSubnet(config_.subnet)->base + static_cast<uint32_t>(peer) + 1);
}

std::vector<std::string> WanEmulator::ExecPrefix(int peer) const {
  return {"ip", "netns", "exec", Namespace(peer)};
}

Result<int> WanEmulator::OpenSocket(int peer, int domain, int type) const {
  if (peer < 0 || peer >= num_peers()) return InvalidArgument("no peer " + std::to_string(peer));
  int fd = -1;
  TRIB_RETURN_IF_ERROR(RunInNetns(Namespace(peer), [&]() -> Status {
    fd = ::socket(domain, type | SOCK_CLOEXEC, 0);
    if (fd < 0) return IoError(Errno("socket"));
    return Status::Ok();
  }));
  return fd;
}

Status WanEmulator::UpdateLink(int from, int to, const LinkParams& params) {
  if (from < 0 || to < 0 || from >= num_peers() || to >= num_peers() || from == to) {
    return InvalidArgument("no link " + std::to_string(from) + "->" + std::to_string(to));
  }
  TRIB_RETURN_IF_ERROR(ValidateLink(params, "link"));
  if (!forwarder_ || stopped_) return FailedPrecondition("the emulator is not running");
  config_.link(from, to) = params;
  forwarder_->QueueUpdate(from, to, params);
  return Status::Ok();
}

EmulatorStats WanEmulator::Stats() const {
  if (!forwarder_) return {};
  EmulatorStats s = forwarder_->Snapshot();
  std::lock_guard<std::mutex> lock(netlink_mu_);
  s.tun_dropped.assign(static_cast<size_t>(num_peers()), 0);
  for (size_t i = 0; i < netlink_fds_.size(); ++i) {
    if (auto dropped = TunDropped(netlink_fds_[i], ifindexes_[i]); dropped.ok()) {
      s.tun_dropped[i] = *dropped;
    }
  }
  return s;
}

}  // namespace tributary::wan
