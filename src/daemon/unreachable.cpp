// Peers UDP does not reach (issue 14: a firewall that passes TCP and drops
// UDP). A mechanism that never heard a connection's peer over UDP says so
// (MechHost::peer_unreachable); the peer's host goes into the kernel's
// `udp_blocked` map until --udp-retry seconds from now, and the sock_ops
// program keeps every connection to it plain TCP meanwhile (on both sides
// of the handshake). Past that time the kernel ignores the entry, so the
// next connection tries UDP again; hookerd only removes stale entries and
// shows the live ones (hookerctl status).
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <time.h>

#include <cstring>

#include <nlohmann/json.hpp>

#include "daemon/daemon.h"

namespace hooker {

namespace {

uint64_t monotonic_ns() {  // bpf_ktime_get_ns's clock
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// As the kernel's key: an IPv4-mapped address in IPv4 form.
hk_peer_key key_of(const sockaddr_in6& a) {
  hk_peer_key k{};
  if (IN6_IS_ADDR_V4MAPPED(&a.sin6_addr)) {
    k.family = AF_INET;
    std::memcpy(&k.addr[0], &a.sin6_addr.s6_addr[12], 4);
  } else {
    k.family = AF_INET6;
    std::memcpy(k.addr, &a.sin6_addr, 16);
  }
  return k;
}

std::string str_of(const hk_peer_key& k) {
  char buf[INET6_ADDRSTRLEN] = "?";
  inet_ntop(static_cast<int>(k.family), k.addr, buf, sizeof(buf));
  return buf;
}

}  // namespace

void Daemon::peer_unreachable(const sockaddr_in6& peer) {
  hk_peer_key k = key_of(peer);
  uint64_t now = monotonic_ns();
  hk_udp_blocked v{now + opt_.udp_retry_s * 1000000000ull, now};
  hk_udp_blocked old;
  // Another connection to it may have said so already: keep the first time.
  if (bpf_map_lookup_elem(kernel_->udp_blocked_fd(), &k, &old) == 0 && old.until_ns > now) return;
  if (bpf_map_update_elem(kernel_->udp_blocked_fd(), &k, &v, BPF_ANY) != 0) {
    fprintf(stderr, "hookerd: cannot remember %s as unreachable by UDP: %s\n",
            str_of(k).c_str(), strerror(errno));
    return;
  }
  cnt_.peers_marked_unreachable++;
  fprintf(stderr,
          "hookerd: %s never answered over UDP: its connections stay TCP for %u s, then try "
          "UDP again\n",
          str_of(k).c_str(), opt_.udp_retry_s);
}

// Entries past their time mean nothing to the kernel any more.
void Daemon::gc_unreachable() {
  int fd = kernel_->udp_blocked_fd();
  uint64_t now = monotonic_ns();
  hk_peer_key k, next;
  std::vector<hk_peer_key> stale;
  for (int r = bpf_map_get_next_key(fd, nullptr, &k); r == 0;
       r = bpf_map_get_next_key(fd, &k, &next), k = next) {
    hk_udp_blocked v;
    if (bpf_map_lookup_elem(fd, &k, &v) == 0 && v.until_ns <= now) stale.push_back(k);
  }
  for (auto& s : stale) bpf_map_delete_elem(fd, &s);
}

nlohmann::json Daemon::unreachable_json() const {
  nlohmann::json out = nlohmann::json::array();
  int fd = kernel_->udp_blocked_fd();
  uint64_t now = monotonic_ns();
  hk_peer_key k, next;
  for (int r = bpf_map_get_next_key(fd, nullptr, &k); r == 0;
       r = bpf_map_get_next_key(fd, &k, &next), k = next) {
    hk_udp_blocked v;
    if (bpf_map_lookup_elem(fd, &k, &v) != 0 || v.until_ns <= now) continue;
    out.push_back({{"peer", str_of(k)},
                   {"since_s", static_cast<double>(now - v.since_ns) / 1e9},
                   {"retry_in_s", static_cast<double>(v.until_ns - now) / 1e9}});
  }
  return out;
}

}  // namespace hooker
