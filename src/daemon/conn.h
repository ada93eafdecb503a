// One moved TCP connection as hookerd sees it: the application-side slot,
// the peer, and both directions of the byte stream.
#pragma once

#include <netinet/in.h>

#include <array>
#include <bitset>
#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "core/abi.h"
#include "core/reassembly.h"

namespace hooker {

// Credit a sender starts with before any ACK: both sides know it.
constexpr uint32_t kInitialWindow = 256 * 1024;

using Clock = std::chrono::steady_clock;

// What a connection can wait for in one of the daemon's lists (WaitList).
enum WaitFor : uint8_t {
  kWaitUdpRoom,    // wanted to send, the UDP queue was full
  kWaitAckRoom,    // owes an ACK, the UDP queue was full
  kWaitBatchEnd,   // got datagrams: delivered and acknowledged after the batch
  kWaitAppRoom,    // the application did not take all bytes: the next tick
  kWaitLanding,    // a fast send still running held the slow lane: the next tick
  kWaitKinds,
};

struct Conn {
  Conn() : in(kInitialWindow) {}

  // Lifetime (Daemon::retire). A retired connection has left every table and
  // every entry point returns at once on it, but its memory lasts until the
  // end of the event-loop turn (Daemon::reap): a pointer taken during the
  // turn, by a caller up the stack or a list being walked, never dangles.
  bool retired = false;
  std::bitset<kWaitKinds> waiting;  // the lists it is in, one bit per WaitFor

  uint32_t slot = 0;
  hk_flow app{};            // the application socket's own tuple
  uint64_t token = 0;       // ours: the peer puts it in every datagram
  uint64_t peer_token = 0;  // theirs: we put it in every datagram
  uint64_t cookie = 0;
  sockaddr_in6 peer{};      // the peer hookerd
  bool active = false;      // this side connected
  int in_fd = -1;           // the slot's `in`: the slow lane; writes to the app
  int out_fd = -1;          // the slot's `out`: the fast lane
  hk_lanes* lanes = nullptr;  // shared with the sk_msg program
  uint64_t drained_for = 0;   // the slow-lane mode whose fast bytes are all read
  Clock::time_point since = Clock::now();
  uint32_t snd_nxt = 0, rcv_nxt = 0;  // the application socket's, at bind

  // application -> peer
  uint64_t sent = 0;
  uint64_t peer_acked = 0;             // the peer received everything below
  uint64_t send_limit = kInitialWindow;  // the peer accepts bytes below
  bool app_shut_wr = false;  // the application will write no more
  uint64_t app_total = 0;    // and this is how much it wrote
  bool out_eof = false;      // every byte it wrote has been read
  bool end_sent = false;     // and the END frame is queued
  Clock::time_point progress_at = Clock::now();  // the peer last let us go on
  uint64_t probe_offset = 0;  // bytes that had long left when the probe did
  // `sent` at the last few loss checks: a probe asks only about bytes sent
  // long enough ago that they cannot still be on their way.
  std::array<uint64_t, 8> sent_history{};
  uint8_t history_at = 0;
  int probes = 0;             // probes sent without an answer or progress
  uint64_t credit() const { return send_limit > sent ? send_limit - sent : 0; }
  bool unacked() const { return sent > peer_acked || (end_sent && !end_acked); }
  // Waiting on the peer: bytes it has not confirmed, or no credit to send.
  bool stalled() const { return unacked() || (credit() == 0 && !out_eof); }
  bool end_acked = false;
  bool ack_pending = false;  // an ACK is owed but the UDP queue was full
  bool failed = false;       // hookerd's own side broke: reset at the next check
  bool watching_room = false;  // for a writer the slow lane refused (writers.cpp)

  // peer -> application
  Reassembly in;
  std::optional<uint64_t> peer_end;  // the peer's stream length, once known
  uint64_t acked = 0;                // in.next() we last acknowledged
  uint64_t acked_limit = kInitialWindow;  // and the limit we granted
  Clock::time_point gap_since{};     // a hole in the stream appeared
  uint64_t consumed_base = 0;        // the kernel's read counter at bind
  std::vector<uint32_t> held_fins;   // NFQUEUE ids of the peer's FIN
  bool app_gone = false;             // the application socket closed
  bool inbound_dead = false;         // it can take no more bytes
  bool peer_done() const { return peer_end && in.delivered() == *peer_end; }

  const char* state() const {
    if (app_gone) return "closing";
    if (app_shut_wr && peer_end) return "closing";
    if (app_shut_wr) return "local_shutdown";
    if (peer_end) return "peer_shutdown";
    return "established";
  }
};

// The connections waiting for one thing. The membership is a bit on the
// connection, so one is in a list at most once and joining costs no search;
// a retired one never joins, and one retired while in the list is passed
// over by drain() and dropped by purge() before its memory goes.
class WaitList {
 public:
  explicit WaitList(WaitFor why) : why_(why) {}
  WaitFor why() const { return why_; }
  bool empty() const { return v_.empty(); }
  size_t size() const { return v_.size(); }

  void add(Conn& c) {
    if (c.retired || c.waiting[why_]) return;
    c.waiting.set(why_);
    v_.push_back(&c);
  }

  // Empties the list and calls f on each member still live. f may add a
  // connection back: it then waits for the next drain, once.
  template <class F>
  void drain(F&& f) {
    std::vector<Conn*> now;
    now.swap(v_);
    for (Conn* c : now) c->waiting.reset(why_);
    for (Conn* c : now)
      if (!c->retired) f(*c);
  }

  void purge() {
    std::erase_if(v_, [](const Conn* c) { return c->retired; });
  }

 private:
  WaitFor why_;
  std::vector<Conn*> v_;
};

}  // namespace hooker
