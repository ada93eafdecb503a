// Loss detection and resets: how a moved connection fails loudly.
#include <bpf/bpf.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdio>
#include <cstring>

#include "core/rst.h"
#include "daemon/daemon.h"

namespace hooker {

void Daemon::send_reset(uint64_t peer_token, const sockaddr_in6& to) {
  if (udp_->room() == 0) flush();
  if (udp_->room() == 0) {
    resets_owed_.push_back({peer_token, to});  // sent once the queue drains
    return;
  }
  udp_->queue({HK_WIRE_RESET, HK_MECH_UDP, peer_token, 0, 0, {}}, to);
  cnt_.resets_sent++;
}

// ---- loss and reset --------------------------------------------------------

namespace {
constexpr auto kGapTimeout = std::chrono::milliseconds(250);  // a hole that stays
constexpr auto kProbeAfter = std::chrono::milliseconds(100);  // no ACK progress
constexpr auto kProbeMax = std::chrono::milliseconds(1000);   // backoff cap
constexpr int kMaxProbes = 12;                                 // ~7 s unanswered
}  // namespace

void Daemon::check_losses() {
  auto now = Clock::now();
  struct Dead { Conn* c; uint64_t* counter; const char* why; };
  std::vector<Dead> dead;
  for (auto& [tok, cp] : by_token_) {
    Conn& c = *cp;
    if (c.failed) {
      dead.push_back({&c, &cnt_.resets_local_failure, "its slot failed"});
      continue;
    }
    // Receiving: a hole that does not fill means a datagram is gone for
    // good (this mechanism does not retransmit). END reveals a lost tail.
    bool hole = c.in.out_of_order() > 0 || (c.peer_end && c.in.next() < *c.peer_end);
    if (!hole) {
      c.gap_since = {};
    } else if (c.gap_since == Clock::time_point{}) {
      c.gap_since = now;
    } else if (now - c.gap_since > kGapTimeout) {
      dead.push_back({&c, &cnt_.resets_lost_datagram,
                      "a datagram was lost (a hole in the stream did not fill)"});
      continue;
    }
    // Sending: data out without acknowledgement, or no credit; ask the peer
    // where it stands (its answer also carries a lost window update).
    c.sent_history[c.history_at++ % c.sent_history.size()] = c.sent;
    auto wait = std::min<Clock::duration>(kProbeAfter * (c.probes + 1), kProbeMax);
    if (c.stalled() && now - c.progress_at > wait) {
      if (c.probes >= kMaxProbes) {
        dead.push_back({&c, &cnt_.resets_peer_silent, "the peer stopped answering"});
        continue;
      }
      c.probes++;
      // The oldest entry: `sent` 8 checks (160 ms) ago, far longer than any
      // reordering between the two hosts.
      c.probe_offset = c.sent_history[c.history_at % c.sent_history.size()];
      ack(c, HK_WIRE_F_PROBE);
    }
  }
  for (auto& d : dead) {
    ++*d.counter;
    reset(*d.c, d.why, true);
  }
}

void Daemon::reset(Conn& c, const char* why, bool tell_peer) {
  if (c.retired) return;  // reset once, by the first cause
  fprintf(stderr, "hookerd: reset %s: %s\n", to_string(c.app).c_str(), why);
  if (tell_peer) {
    send_reset(c.peer_token, c.peer);
    send_reset(c.peer_token, c.peer);  // a lost RESET only delays the peer's own detection
  }
  c.inbound_dead = true;  // not one byte more reaches the application
  inject_rst(c);
  retire(c);
}

void Daemon::inject_rst(const Conn& c) {
  bool v4 = flow_is_v4(c.app);
  int fd = v4 ? raw4_.get() : raw6_.get();
  uint32_t local[4], remote[4];
  std::memcpy(local, c.app.laddr, 16);
  std::memcpy(remote, c.app.raddr, 16);
  if (v4) {
    local[0] = v4_word(c.app, c.app.laddr);
    remote[0] = v4_word(c.app, c.app.raddr);
  }
  auto send_to = [&](const uint32_t* dst, const std::vector<uint8_t>& pkt) {
    sockaddr_storage ss{};
    socklen_t len;
    if (v4) {
      auto& a = reinterpret_cast<sockaddr_in&>(ss);
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = dst[0];
      len = sizeof(a);
    } else {
      auto& a = reinterpret_cast<sockaddr_in6&>(ss);
      a.sin6_family = AF_INET6;
      std::memcpy(&a.sin6_addr, dst, 16);
      len = sizeof(a);
    }
    if (sendto(fd, pkt.data(), pkt.size(), 0, reinterpret_cast<sockaddr*>(&ss), len) > 0)
      cnt_.rst_injected++;
  };
  // Each end expects the other's sequence number, or one more after a FIN;
  // only the exact one resets (RFC 5961), the other is ignored.
  for (uint32_t d : {0u, 1u}) {
    // To our application, as if from the peer: delivered locally.
    send_to(local, build_rst(v4, remote, c.app.rport, local, c.app.lport, c.rcv_nxt + d));
    // To the peer's application, as ours would send it.
    send_to(remote, build_rst(v4, local, c.app.lport, remote, c.app.rport, c.snd_nxt + d));
  }
}

}  // namespace hooker
