// Both directions of one `udp` connection: the application's bytes framed
// into DATA datagrams as far as the peer's credit goes, ended by an END;
// the peer's datagrams put back in order and handed to the application,
// acknowledged with the credit the receiver can hold.
#include "mech/udp/conn.h"

#include <algorithm>
#include <climits>

#include "mech/udp/udp.h"

namespace hooker {

UdpConn::UdpConn(UdpMechanism& m, const PeerInfo& peer, AppPort& port)
    : m_(m), peer_(peer), port_(port), coverage_(m.coverage(peer)),
      max_payload_(wire::payload_for_mss(peer.mss)),
      opened_at_(m.host().now()), path_was_open_(!peer.active && m.path_open(peer.peer)),
      last_tx_at_(opened_at_), progress_at_(m.host().now()) {}

UdpConn::~UdpConn() = default;

void UdpConn::start() {
  // Datagrams that beat the handshake to us. A RESET among them retires
  // the connection: whatever follows, pump() included, passes over it.
  m_.replay_early(*this);
  if (retired) return;
  if (peer_.active && !heard_) hello();
  pump();
}

void UdpConn::hello() {
  hellos_++;
  hello_at_ = m_.host().now();
  ack(HK_WIRE_F_HELLO);
}

void UdpConn::retire() {
  if (retired) return;
  retired = true;
  m_.forget(*this);
}

void UdpConn::fail(std::string_view why, bool tell_peer) {
  if (retired) return;  // reset once, by the first cause
  if (tell_peer) {
    m_.send_reset(peer_.peer_token, peer_.peer);
    m_.send_reset(peer_.peer_token, peer_.peer);  // a lost RESET only delays the peer's own detection
  }
  port_.abort(why);  // retires this connection: not one byte more reaches the application
}

// ---- application -> wire ---------------------------------------------------

void UdpConn::pump() {
  if (retired) return;
  if (held()) return arm();  // the connecting side's first datagram starts it
  DatagramIo& io = m_.io();
  bool was_stalled = stalled();
  while (!out_eof_ && !failed_) {
    if (auto total = port_.final_length(); total && sent_ == *total) {
      out_eof_ = true;
      break;
    }
    uint64_t credit = this->credit();
    if (credit == 0) break;  // the peer's ACK calls pump again
    if (!m_.make_room()) {
      m_.wait(*this, kWaitUdpRoom);
      break;
    }
    // At most one GSO group per read, straight into the datagram buffers.
    size_t frames = std::min<uint64_t>(
        {io.room(), UdpMechanism::kGsoMax, (credit + max_payload_ - 1) / max_payload_});
    iovec iov[UdpMechanism::kGsoMax];
    for (size_t k = 0; k < frames; k++)
      iov[k] = {io.tx_buffer(k) + wire::kHeader, max_payload_};
    // The last area is trimmed so no byte is read past the credit.
    size_t want = std::min<uint64_t>(credit, frames * max_payload_);
    iov[frames - 1].iov_len = want - (frames - 1) * max_payload_;
    ssize_t n = port_.read(iov, frames);
    if (n == 0) break;
    if (n < 0) {
      // The slot broke, or a lane closed with bytes owed: the stream cannot
      // be completed, and an END would pass a truncated one off as whole.
      failed_ = true;
      break;
    }
    for (size_t left = static_cast<size_t>(n); left > 0;) {
      size_t len = std::min(left, max_payload_);
      std::byte* b = io.tx_buffer(0);
      wire::encode_header({HK_WIRE_DATA, m_.id(), peer_.peer_token, sent_, 0,
                           std::span<const std::byte>(b + wire::kHeader, len)},
                          b);
      io.commit(wire::kHeader + len, peer_.peer, coverage_);
      datagrams_out_++;
      sent_ += len;
      left -= len;
    }
    last_sent_at_ = last_tx_at_ = m_.host().now();
    if (Sample& s = samples_[sample_at_ % samples_.size()];
        last_sent_at_ - samples_[(sample_at_ + samples_.size() - 1) % samples_.size()].at >=
        kSampleEvery) {
      sent_floor_ = s.sent;
      s = {last_sent_at_, sent_};
      sample_at_++;
    }
  }
  if (out_eof_ && !end_sent_ && !failed_) {
    if (!m_.make_room()) {
      m_.wait(*this, kWaitUdpRoom);
      return arm();
    }
    m_.queue({HK_WIRE_END, m_.id(), peer_.peer_token, sent_, 0, {}}, peer_.peer);
    last_tx_at_ = m_.host().now();
    end_sent_ = true;
    port_.sent_all();  // the application side may retire the connection
    if (retired) return;
  }
  // The wait for the peer starts now, not at its last answer long ago.
  if (!was_stalled && stalled()) progress_at_ = m_.host().now();
  arm();
}

void UdpConn::path_shrank(uint32_t mtu) {
  // As an MSS would say it: a UDP datagram fills what IP leaves of the
  // MTU, the UDP header less than a TCP one with its timestamps.
  bool v4 = IN6_IS_ADDR_V4MAPPED(&peer_.peer.sin6_addr);
  uint32_t ip_udp = (v4 ? 20 : 40) + 8;
  if (mtu <= ip_udp + 12 + wire::kHeader) return;  // nonsense: keep what we have
  max_payload_ = std::min(max_payload_, wire::payload_for_mss(mtu - ip_udp - 12));
}

// ---- wire -> application ---------------------------------------------------

void UdpConn::on_frame(const wire::Frame& f) {
  if (retired) return;
  bool first = !heard_;  // the path carries the peer's UDP to us
  heard_ = true;
  UdpCounters& cnt = m_.counters();
  switch (f.type) {
    case HK_WIRE_DATA: {
      datagrams_in_++;
      auto a = in_.add(f.offset, f.payload);
      if (a == Reassembly::Added::kDuplicate) cnt.rx_duplicate++;
      if (a == Reassembly::Added::kBuffered) cnt.rx_out_of_order++;
      if (a == Reassembly::Added::kBeyondWindow) cnt.rx_beyond_window++;
      if (a == Reassembly::Added::kDuplicate || a == Reassembly::Added::kBeyondWindow) drops_++;
      m_.wait(*this, kWaitBatchEnd);  // delivered once the batch is read
      break;
    }
    case HK_WIRE_ACK:
      return on_ack(f, first);
    case HK_WIRE_END:
      peer_end_ = f.offset;
      m_.wait(*this, kWaitBatchEnd);  // acknowledged (END_SEEN) with the batch
      break;
    case HK_WIRE_RESET:
      cnt.resets_received++;
      return fail("the peer reset the connection", false);
  }
  // A hole that does not fill means a datagram is gone for good (this
  // mechanism does not retransmit). END reveals a lost tail.
  if (!hole()) {
    gap_since_ = {};
  } else if (gap_since_ == Time{}) {
    gap_since_ = m_.host().now();
    arm();
  }
  if (first && !peer_.active) pump();  // what was held for it
}

void UdpConn::on_ack(const wire::Frame& f, bool first) {
  bool progress = false;
  if (f.offset > peer_acked_ && f.offset <= sent_) {
    peer_acked_ = f.offset;
    progress = true;
  }
  if ((f.flags & HK_WIRE_F_END_SEEN) && !end_acked_) end_acked_ = progress = true;
  if (f.offset + f.window > send_limit_) {
    send_limit_ = f.offset + f.window;
    progress = true;
  }
  if (f.flags & HK_WIRE_F_REPLY) {
    // The answer to a probe sent when everything below probe_offset had
    // long left: what the peer still lacks was lost.
    if (probes_ > 0 && peer_acked_ < probe_offset_) {
      m_.counters().resets_lost_datagram++;
      return fail("a datagram was lost (the peer's answer to a probe lacks it)", true);
    }
    progress = true;  // alive, merely slow to read
  }
  if (progress) {
    progress_at_ = m_.host().now();
    probes_ = 0;
  }
  // A HELLO is answered: the connecting side learns it is heard. Not the
  // first one after we spoke first: what we sent tells it (if that was
  // lost, the stream fails anyway, and a later HELLO is answered).
  if (f.flags & HK_WIRE_F_PROBE) ack(HK_WIRE_F_REPLY);
  else if ((f.flags & HK_WIRE_F_HELLO) && !(first && spoke())) ack();
  pump();
}

void UdpConn::deliver() {
  if (retired) return;
  // One hand-over per batch; what the application side did not take stays
  // here, inside the window, until on_app_room.
  while (!in_.ready().empty()) {
    auto r = in_.ready();
    ssize_t n = port_.deliver(r);
    if (n < 0) {
      m_.counters().resets_app_gone++;
      return fail(kAppGone, true);
    }
    in_.consumed(static_cast<size_t>(n));
    if (static_cast<size_t>(n) < r.size()) break;
  }
  if (ack_due(m_.window() / 4)) ack();
  if (peer_end_ && in_.delivered() == *peer_end_) {
    if (ack_due(1)) ack();
    port_.peer_finished();
  }
}

// The limit a new ACK would grant: the receiver holds at most window()
// bytes, whether out of order or waiting for the application.
uint64_t UdpConn::grantable() const {
  uint64_t w = m_.window(), held = in_.buffered();
  return std::max(in_.limit(), in_.next() + (w > held ? w - held : 0));
}

bool UdpConn::ack_due(uint64_t threshold) const {
  bool end_news = peer_end_ && in_.next() >= *peer_end_ && acked_ < *peer_end_;
  return end_news || in_.next() >= acked_ + threshold || grantable() >= acked_limit_ + threshold;
}

void UdpConn::ack(uint8_t flags) {
  if (retired) return;
  if (!m_.make_room()) {
    // Never dropped: a lost window update would stall the sender for good.
    ack_pending_ = true;
    m_.wait(*this, kWaitAckRoom);
    return;
  }
  ack_pending_ = false;
  uint64_t limit = grantable();
  in_.raise_limit(limit);
  if (peer_end_ && in_.next() >= *peer_end_) flags |= HK_WIRE_F_END_SEEN;
  uint64_t next = in_.next();
  m_.queue({HK_WIRE_ACK, m_.id(), peer_.peer_token, next,
            static_cast<uint32_t>(std::min<uint64_t>(limit - next, UINT32_MAX)), {}, flags},
           peer_.peer);
  last_tx_at_ = m_.host().now();
  acked_ = next;
  acked_limit_ = limit;
}

StreamStatus UdpConn::status() const {
  static const char* kNames[] = {"udp_room", "ack_room", "batch_end"};
  static_assert(std::size(kNames) == kUdpWaitKinds);
  StreamStatus s{sent_, in_.delivered(), end_sent_, peer_end_, {}, datagrams_out_,
                 datagrams_in_, drops_};
  for (int w = 0; w < kUdpWaitKinds; w++)
    if (waiting[w]) s.waiting.push_back(kNames[w]);
  return s;
}

}  // namespace hooker
