#include "net/tcp_tuning.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>

namespace tributary::net {
namespace {
std::mutex preference_mu;
std::string& Preference() {
  static std::string name = kDefaultCongestionControl;
  return name;
}
std::once_flag refusal_logged;
}  // namespace

void SetPreferredCongestionControl(std::string name) {
  std::lock_guard<std::mutex> lock(preference_mu);
  Preference() = std::move(name);
}

std::string PreferredCongestionControl() {
  std::lock_guard<std::mutex> lock(preference_mu);
  return Preference();
}

void ApplyPreferredCongestionControl(int fd, bool loopback) {
  if (loopback) return;
  const std::string name = PreferredCongestionControl();
  if (name.empty()) return;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name.data(), static_cast<socklen_t>(name.size())) == 0) {
    return;
  }
  const int error = errno;
  std::call_once(refusal_logged, [&] {
    auto current = CongestionControlOf(fd);
    spdlog::warn(
        "TCP congestion control '{}' refused ({}); links to other hosts keep the kernel's '{}'. To use it, "
        "load its module (modprobe tcp_{}) and allow it (net.ipv4.tcp_allowed_congestion_control); "
        "--tcp-congestion picks another",
        name, std::strerror(error), current.ok() ? *current : "default", name);
  });
}

Result<std::string> CongestionControlOf(int fd) {
  char name[64] = {};
  socklen_t size = sizeof(name) - 1;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, &size) != 0) {
    return Unavailable(std::string("cannot read TCP_CONGESTION: ") + std::strerror(errno));
  }
  return std::string(name, strnlen(name, size));
}

Status RestartCongestionControl(int fd) {
  TRIB_ASSIGN_OR_RETURN(const std::string current, CongestionControlOf(fd));
  const std::string other = current == "reno" ? "cubic" : "reno";
  for (const std::string& name : {other, current}) {
    if (::setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name.data(), static_cast<socklen_t>(name.size())) != 0) {
      return Unavailable("cannot set TCP_CONGESTION " + name + ": " + std::strerror(errno));
    }
  }
  return Status::Ok();
}

std::string KernelDefaultCongestionControl() {
  std::ifstream in("/proc/sys/net/ipv4/tcp_congestion_control");
  std::string name;
  in >> name;
  return name;
}

}  // namespace tributary::net
