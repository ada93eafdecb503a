// How a `udp` connection fails loudly: it does not retransmit, so a
// datagram gone for good ends the connection with a reset on both ends.
// Per-connection deadlines (AppPort::wake_at), in time, not loop ticks.
#include <algorithm>

#include "core/flow.h"
#include "mech/udp/conn.h"
#include "mech/udp/udp.h"

namespace hooker {

namespace {
constexpr auto kGapTimeout = std::chrono::milliseconds(250);  // a hole that stays
constexpr auto kProbeAfter = std::chrono::milliseconds(100);  // no ACK progress
constexpr auto kProbeMax = std::chrono::milliseconds(1000);   // backoff cap
constexpr int kMaxProbes = 12;  // each after the last, backing off: ~8 s unanswered
// The connecting side's opening datagram is sent again, twice as late each
// time, until the peer answers; a peer not heard from at all (nothing of
// this connection, either way) after kHelloGiveUp is one UDP does not
// reach. Far longer than a round trip, and short enough that the first
// connection to such a peer fails fast (the next ones stay TCP).
constexpr auto kHelloFirst = std::chrono::milliseconds(250);
constexpr auto kHelloGiveUp = std::chrono::seconds(3);
// The accepting side waits longer: the connecting side, which sent the
// HELLOs, should be the one to find the path dead and remember the peer
// (its reset reaches the other side over TCP).
Clock::duration give_up(bool active) { return active ? kHelloGiveUp : 2 * kHelloGiveUp; }

Clock::duration probe_wait(int probes) {
  return std::min<Clock::duration>(kProbeAfter * (probes + 1), kProbeMax);
}

Clock::duration hello_wait(int hellos) {
  return kHelloFirst * (1 << std::min(hellos - 1, 4));
}
}  // namespace

// A lower bound of what had been sent by `t`.
uint64_t UdpConn::sent_before(Time t) const {
  if (last_sent_at_ <= t) return sent_;
  uint64_t best = sent_floor_;
  for (const Sample& s : samples_)
    if (s.at <= t) best = std::max(best, s.sent);
  return best;
}

void UdpConn::arm() {
  if (retired) return;
  Time t = kNever;
  if (failed_) t = Time{};  // at once
  if (gap_since_ != Time{}) t = std::min(t, gap_since_ + kGapTimeout);
  if (stalled()) t = std::min(t, std::max(progress_at_, asked_at_) + probe_wait(probes_));
  if (!heard_) {
    t = std::min(t, opened_at_ + give_up(peer_.active));
    if (peer_.active) t = std::min(t, hello_at_ + hello_wait(hellos_));
  } else if (peer_.active && m_.keepalive() > Clock::duration::zero()) {
    t = std::min(t, last_tx_at_ + m_.keepalive());
  }
  if (t < armed_) {
    armed_ = t;
    port_.wake_at(t);
  }
}

void UdpConn::on_deadline(Time now) {
  if (retired) return;
  armed_ = kNever;
  UdpCounters& cnt = m_.counters();
  if (failed_) {
    cnt.resets_local_failure++;
    return fail("its slot failed", true);
  }
  if (!heard_ && now - opened_at_ >= give_up(peer_.active)) {
    // Nothing of this connection came back over UDP: the path drops it (or
    // the peer's hookerd is gone). Its host stays TCP for a while, so only
    // this connection fails.
    cnt.resets_peer_unreachable++;
    m_.host().peer_unreachable(peer_.peer, m_.id());
    // What was sent, and where: a wrong address would show here.
    return fail("the peer's hookerd was never heard from over UDP (a path that drops UDP?): " +
                    std::to_string(hellos_) + " opening datagrams and " + std::to_string(sent_) +
                    " bytes sent to " + to_string(peer_.peer),
                true);
  }
  if (!heard_ && peer_.active && now - hello_at_ >= hello_wait(hellos_)) hello();
  if (heard_ && peer_.active && m_.keepalive() > Clock::duration::zero() &&
      now - last_tx_at_ >= m_.keepalive()) {
    cnt.keepalives_sent++;
    ack();  // any datagram refreshes the NAT's mapping
  }
  if (gap_since_ != Time{} && now - gap_since_ >= kGapTimeout) {
    cnt.resets_lost_datagram++;
    return fail("a datagram was lost (a hole in the stream did not fill)", true);
  }
  // Data out without acknowledgement, or no credit: ask the peer where it
  // stands (its answer also carries a lost window update).
  if (stalled() && now - std::max(progress_at_, asked_at_) >= probe_wait(probes_)) {
    if (probes_ >= kMaxProbes) {
      cnt.resets_peer_silent++;
      return fail("the peer stopped answering", true);
    }
    probes_++;
    asked_at_ = now;
    probe_offset_ = sent_before(now - kInFlight);
    ack(HK_WIRE_F_PROBE);
  }
  arm();
}

}  // namespace hooker
