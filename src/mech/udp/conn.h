// One connection of the `udp` mechanism: both directions of its byte stream
// on the wire. Credit: a sender never has more than the receiver's window in
// flight. Order: the receiver reorders by offset and drops duplicates.
// Loss: it does not retransmit; a hole that stays, or a probe answered
// without bytes sent long before, resets the connection loudly.
#pragma once

#include <array>
#include <bitset>
#include <cstdint>
#include <optional>

#include "core/reassembly.h"
#include "core/wire.h"
#include "mech/mechanism.h"

namespace hooker {

class UdpMechanism;

// Credit a sender starts with before any ACK: both sides know it.
constexpr uint32_t kInitialWindow = 256 * 1024;
// Bytes sent this long ago cannot still be on their way (far longer than
// any reordering between two hosts): a probe asks about those only.
constexpr auto kInFlight = std::chrono::milliseconds(160);
// How often `sent` is sampled to know what had left kInFlight ago: the
// ring's 8 samples then reach back further than kInFlight.
constexpr auto kSampleEvery = std::chrono::milliseconds(25);

// What a connection can wait for in one of the mechanism's lists.
enum UdpWait : uint8_t {
  kWaitUdpRoom,   // wanted to send, the send queue was full
  kWaitAckRoom,   // owes an ACK, the send queue was full
  kWaitBatchEnd,  // got datagrams: delivered and acknowledged after the batch
  kUdpWaitKinds,
};

class UdpConn final : public MechConn {
 public:
  UdpConn(UdpMechanism& m, const PeerInfo& peer, AppPort& port);
  ~UdpConn() override;

  void start() override;
  void on_app_readable() override { pump(); }
  void on_app_room() override { deliver(); }
  void on_deadline(Time now) override;
  void reset(std::string_view why) override { fail(why, true); }
  void retire() override;
  StreamStatus status() const override;

  // From the mechanism.
  void on_frame(const wire::Frame& f);
  void pump();      // application -> wire
  void deliver();   // wire -> application, then an ACK if one is due
  void ack(uint8_t flags = 0);
  bool ack_due(uint64_t threshold) const;
  bool ack_pending() const { return ack_pending_; }
  const PeerInfo& peer() const { return peer_; }
  bool heard() const { return heard_; }
  // The peer's datagrams now come from `at` (a NAT): send there.
  void peer_at(const sockaddr_in6& at) { peer_.peer = at; }
  // The path to the peer carries at most `mtu` bytes now (it shrank):
  // later DATA datagrams fit it.
  void path_shrank(uint32_t mtu);

  bool retired = false;
  std::bitset<kUdpWaitKinds> waiting;  // the lists it is in

 private:
  void on_ack(const wire::Frame& f, bool first);
  void fail(std::string_view why, bool tell_peer);
  void arm();  // asks for on_deadline at the next thing to check
  uint64_t credit() const { return send_limit_ > sent_ ? send_limit_ - sent_ : 0; }
  bool unacked() const { return sent_ > peer_acked_ || (end_sent_ && !end_acked_); }
  // Waiting on the peer: bytes it has not confirmed, or no credit to send.
  bool stalled() const { return unacked() || (credit() == 0 && !out_eof_); }
  bool hole() const { return in_.out_of_order() > 0 || (peer_end_ && in_.next() < *peer_end_); }
  uint64_t sent_before(Time t) const;
  void hello();  // the connecting side's opening datagram (HK_WIRE_F_HELLO)
  // The accepting side sends nothing before the connecting side's first
  // datagram: a NAT in front of that side drops what comes before it
  // opened its mapping, and the datagram says where to send. Unless the
  // path was open when the connection started (UdpMechanism::path_open):
  // then its first bytes leave at once, a one-way trip and two wake-ups
  // sooner.
  bool held() const { return !peer_.active && !heard_ && !path_was_open_; }
  bool spoke() const { return datagrams_out_ > 0 || end_sent_; }
  uint64_t grantable() const;

  UdpMechanism& m_;
  PeerInfo peer_;
  AppPort& port_;
  uint16_t coverage_;  // of its DATA datagrams (udplite:cov=N), 0: the socket's
  size_t max_payload_;  // per DATA datagram: what fits the TCP connection's path
  Time armed_ = kNever;  // the earliest on_deadline asked for
  Time opened_at_;       // start(): the peer has a while to be heard from
  bool heard_ = false;   // a datagram of this connection came from the peer
  bool path_was_open_;   // accepting side: see held()
  int hellos_ = 0;       // opening datagrams sent (connecting side)
  Time hello_at_{};      // the last of them
  Time last_tx_at_{};    // this connection's last datagram out (keep-alive)

  // application -> peer
  uint64_t sent_ = 0;
  uint64_t peer_acked_ = 0;                // the peer received everything below
  uint64_t send_limit_ = kInitialWindow;   // the peer accepts bytes below
  bool out_eof_ = false;   // every byte the application wrote has been read
  bool end_sent_ = false;  // and the END frame is queued
  bool end_acked_ = false;
  bool ack_pending_ = false;  // an ACK is owed but the send queue was full
  bool failed_ = false;       // hookerd's own side broke: reset at once
  Time progress_at_;          // the peer last let us go on
  int probes_ = 0;            // probes sent without an answer or progress
  Time asked_at_{};           // the last probe left
  uint64_t probe_offset_ = 0; // bytes that had long left when the probe did
  // `sent_` now and then (at most every kSampleEvery): a probe asks only
  // about bytes sent long enough ago that they cannot still be on their
  // way. `sent_floor_` is the newest sample pushed out of the ring.
  struct Sample { Time at; uint64_t sent; };
  std::array<Sample, 8> samples_{};
  uint8_t sample_at_ = 0;
  uint64_t sent_floor_ = 0;
  Time last_sent_at_{};  // every byte below sent_ had left by then
  uint64_t datagrams_out_ = 0;  // DATA datagrams (hookerctl conns)

  // peer -> application
  Reassembly in_{kInitialWindow};
  std::optional<uint64_t> peer_end_;  // the peer's stream length, once known
  uint64_t acked_ = 0;                // in_.next() we last acknowledged
  uint64_t acked_limit_ = kInitialWindow;  // and the limit we granted
  Time gap_since_{};                  // a hole in the stream appeared
  uint64_t datagrams_in_ = 0, drops_ = 0;  // DATA datagrams, and those dropped
};

}  // namespace hooker
