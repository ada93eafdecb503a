// Peers UDP does not reach (issue 14: a firewall that passes TCP and drops
// UDP). A mechanism that never heard a connection's peer over UDP says so
// (MechHost::peer_unreachable); the peer's host goes into the kernel's
// `udp_blocked` map until --udp-retry seconds from now, and the sock_ops
// program keeps every connection to it plain TCP meanwhile (on both sides
// of the handshake). hookerd tries UDP again itself: in the last seconds of
// that time it sends path probes from the mechanism's socket to the peer's
// hookerd. An answer ends the entry at once (UDP gets through again); none
// renews it for another --udp-retry, so while the path drops UDP no
// further connection fails. A mechanism without probes (quic) lets the
// entry lapse: the next connection tries UDP itself.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <time.h>

#include <algorithm>
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

uint64_t Daemon::retry_ns() const { return opt_.udp_retry_s * 1000000000ull; }

void Daemon::peer_unreachable(const sockaddr_in6& peer, uint8_t mech) {
  hk_peer_key k = key_of(peer);
  uint64_t now = monotonic_ns();
  hk_udp_blocked v{now + retry_ns(), now, ntohs(peer.sin6_port), mech, 0, 0};
  hk_udp_blocked old;
  // Another connection to it may have said so already: keep the first time.
  if (bpf_map_lookup_elem(kernel_->udp_blocked_fd(), &k, &old) == 0 && old.until_ns > now) return;
  if (bpf_map_update_elem(kernel_->udp_blocked_fd(), &k, &v, BPF_ANY) != 0) {
    log::write(log::Level::kError, "cannot remember " + str_of(k) +
                                       " as unreachable by UDP: " + strerror(errno));
    return;
  }
  cnt_.peers_marked_unreachable++;
  log::write(log::Level::kWarn, str_of(k) + " never answered over UDP: its connections stay TCP "
                                             "for " + std::to_string(opt_.udp_retry_s) +
                                             " s, then try UDP again");
}

void Daemon::path_answered(const sockaddr_in6& peer) {
  hk_peer_key k = key_of(peer);
  if (bpf_map_delete_elem(kernel_->udp_blocked_fd(), &k) != 0) return;  // not ours, or done
  cnt_.path_probes_answered++;
  log::write(log::Level::kInfo, str_of(k) + " answers over UDP again: its connections move again");
}

// Every second: probe the peers whose time is nearly up, renew those that
// never answered, and drop what the kernel would ignore anyway.
void Daemon::gc_unreachable() {
  int fd = kernel_->udp_blocked_fd();
  uint64_t now = monotonic_ns();
  // Probes in the last half of the time, at most its last 3 s: one a second.
  uint64_t window = std::min<uint64_t>(retry_ns() / 2, 3000000000ull);
  hk_peer_key k, next;
  std::vector<std::pair<hk_peer_key, hk_udp_blocked>> changed;
  std::vector<hk_peer_key> stale;
  for (int r = bpf_map_get_next_key(fd, nullptr, &k); r == 0;
       r = bpf_map_get_next_key(fd, &k, &next), k = next) {
    hk_udp_blocked v;
    if (bpf_map_lookup_elem(fd, &k, &v) != 0) continue;
    if (v.until_ns <= now) {
      if (v.probes == 0) {
        stale.push_back(k);  // never probed: the next connection tries UDP
        continue;
      }
      v.until_ns = now + retry_ns();  // probed, never answered: still unreachable
      v.probes = 0;
      changed.emplace_back(k, v);
      continue;
    }
    Mechanism* m = mechanism(v.mech);
    if (v.until_ns - now > window || !m) continue;
    sockaddr_in6 to{};
    to.sin6_family = AF_INET6;
    to.sin6_port = htons(v.port);
    if (k.family == AF_INET) {
      to.sin6_addr.s6_addr[10] = to.sin6_addr.s6_addr[11] = 0xff;
      std::memcpy(&to.sin6_addr.s6_addr[12], &k.addr[0], 4);
    } else {
      std::memcpy(&to.sin6_addr, k.addr, 16);
    }
    if (!m->probe_path(to)) continue;
    cnt_.path_probes_sent++;
    v.probes++;
    changed.emplace_back(k, v);
  }
  // BPF_EXIST: an answer that removed the entry meanwhile wins.
  for (auto& [key, v] : changed) bpf_map_update_elem(fd, &key, &v, BPF_EXIST);
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
                   {"retry_in_s", static_cast<double>(v.until_ns - now) / 1e9},
                   {"probes", v.probes}});
  }
  return out;
}

}  // namespace hooker
