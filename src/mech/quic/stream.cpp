// A moved TCP connection's two byte streams on a QUIC stream: the
// application's bytes read into chunks as far as the peer's credit goes,
// kept until acknowledged; the peer's bytes handed to the application,
// buffered while it holds enough, credited back as they are handed over.
#include "mech/quic/stream.h"

#include <endian.h>

#include <algorithm>
#include <cstring>

#include "mech/quic/connection.h"
#include "mech/quic/quic.h"

namespace hooker::quic {

// ---- the header --------------------------------------------------------------

void StreamHeader::encode(uint8_t* out) const {
  uint32_t magic = htobe32(kMagic);
  uint64_t to = htobe64(to_token), from = htobe64(from_token);
  std::memcpy(out, &magic, 4);
  out[4] = flags;
  std::memset(out + 5, 0, 3);
  std::memcpy(out + 8, &to, 8);
  std::memcpy(out + 16, &from, 8);
}

std::optional<StreamHeader> StreamHeader::decode(const uint8_t* in) {
  uint32_t magic;
  std::memcpy(&magic, in, 4);
  if (be32toh(magic) != kMagic) return std::nullopt;
  StreamHeader h;
  h.flags = in[4];
  uint64_t to, from;
  std::memcpy(&to, in + 8, 8);
  std::memcpy(&from, in + 16, 8);
  h.to_token = be64toh(to);
  h.from_token = be64toh(from);
  return h;
}

const char* peer_reset_why(uint64_t code) {
  switch (code) {
    case kErrReset: return "the peer reset the connection";
    case kErrGone: return "the peer's application closed while bytes were still coming";
    case kErrUnknownToken: return "the peer's hookerd knows no such connection (unknown token)";
    case kErrRefused: return "the peer refused the connection";
    default: return "the peer reset the stream with an unknown error code";
  }
}

// ---- chunks ----------------------------------------------------------------

std::unique_ptr<Chunk> ChunkPool::take() {
  if (free_.empty()) return std::make_unique<Chunk>();
  auto c = std::move(free_.back());
  free_.pop_back();
  return c;
}

void ChunkPool::give(std::unique_ptr<Chunk> c) {
  if (free_.size() < kKeep) free_.push_back(std::move(c));
}

// ---- a peer's stream before it is bound ------------------------------------

void Incoming::on_data(uint64_t offset, const uint8_t* d, size_t len, bool f) {
  if (offset != next) {
    reset = true;  // out of order: the stream is refused when bound
    return;
  }
  next += len;
  size_t h = std::min(len, StreamHeader::kSize - head_len);
  std::memcpy(head + head_len, d, h);
  head_len += h;
  auto* b = reinterpret_cast<const std::byte*>(d);
  data.insert(data.end(), b + h, b + len);
  fin = fin || f;
  if (!header && head_len == StreamHeader::kSize) {
    header = StreamHeader::decode(head);
    if (!header) return m.turn_away(*this, "its first bytes are not a Hooker stream header");
  }
}

void Incoming::on_reset(std::string_view) { reset = true; }

void Incoming::on_closed(uint64_t) { m.forget(*this); }

// ---- a moved connection's stream -------------------------------------------

QuicStream::QuicStream(QuicMechanism& m, const PeerInfo& peer, AppPort& port, bool opener)
    : m_(m), peer_(peer), port_(&port), opener_(opener), window_(m.settings().stream_window) {
  if (!opener) return;
  // The opener's first bytes name the connection to the accepting side.
  chunks_.push_back(m_.chunks().take());
  StreamHeader h{0, peer.peer_token, peer.token};
  h.encode(reinterpret_cast<uint8_t*>(chunks_.back()->data));
  written_ = StreamHeader::kSize;
}

void QuicStream::mark_refusal() {
  StreamHeader h{StreamHeader::kRefused, peer_.peer_token, peer_.token};
  h.encode(reinterpret_cast<uint8_t*>(chunks_.front()->data));
}

QuicStream::~QuicStream() {
  retire();
  for (auto& c : chunks_) m_.chunks().give(std::move(c));
}

void QuicStream::start() {
  started_ = true;
  if (m_.refused(peer_.token)) return fail("the connection was refused", !opener_);
  if (!fail_why_.empty()) return fail(fail_why_, false);
  if (!opener_ && id_ < 0) {
    // The peer opens the stream; if it never does (its hookerd died, its
    // handshake keeps failing), the application is reset, not left hanging.
    await_until_ = m_.host().now() + m_.settings().idle_timeout;
    port_->wake_at(await_until_);
  }
  deliver();
  if (!retired_) pull();
}

void QuicStream::on_app_readable() { pull(); }

void QuicStream::on_deadline(Time now) {
  if (!opener_ && id_ < 0 && !retired_) {
    if (now >= await_until_) return fail("the peer's QUIC stream never came", true);
    port_->wake_at(await_until_);
  }
}

void QuicStream::reset(std::string_view why) {
  m_.counters().streams_reset++;
  fail(why, true);
}

void QuicStream::fail(std::string_view why, bool tell_peer) {
  if (retired_) return;  // reset once, by the first cause
  if (tell_peer) {
    if (conn_ && id_ >= 0 && !closed_ && !shut_) {
      ngtcp2_conn_shutdown_stream(conn_->get(), id_, kErrReset);
      shut_ = true;
      m_.dirty(*conn_);
    }
    // The peer cannot match a reset stream whose header it may never get
    // (RESET_STREAM discards it), nor one not opened yet: a refusal names
    // the connection.
    if (id_ < 0 || (opener_ && acked_ < StreamHeader::kSize && !peer_heard_)) m_.refuse(peer_);
  }
  inbound_dead_ = true;
  port_->abort(why);  // retires this stream
  retire();           // in case the application side did not
}

void QuicStream::retire() {
  if (retired_) return;
  retired_ = true;
  if (!opener_ && id_ < 0) m_.forget(*this);
  detach();
}

void QuicStream::detach() {
  if (!conn_) return;
  if (id_ >= 0 && !closed_ && !conn_->dead()) {
    ngtcp2_conn* c = conn_->get();
    if (!shut_) {
      // Whatever is not done stops here, and the peer learns it.
      if (!(peer_fin_ && rx_head_ == rx_.size()))
        ngtcp2_conn_shutdown_stream_read(c, id_, kErrGone);
      if (!fin_sent_) ngtcp2_conn_shutdown_stream_write(c, id_, kErrGone);
      shut_ = true;
    }
    ngtcp2_conn_set_stream_user_data(c, id_, nullptr);
    m_.dirty(*conn_);
  }
  conn_->remove(*this);
  conn_ = nullptr;
}

void QuicStream::on_connection_dead(std::string_view why) {
  conn_ = nullptr;  // no ngtcp2 call any more
  closed_ = true;
  if (!started_) {
    fail_why_ = std::string(why);  // start() tells the application side
    return;
  }
  fail(why, false);
}

void QuicStream::on_reset(std::string_view why) {
  m_.counters().streams_reset++;
  // The peer reset or stopped this stream itself: it has the stream, and
  // its header with it (it resets only streams it matched), so our reset
  // needs no refusal beside it.
  if (id_ >= 0) peer_heard_ = true;
  fail(why, true);  // our direction too: RESET_STREAM both ways
}

void QuicStream::on_closed(uint64_t error) {
  closed_ = true;  // no ngtcp2 call about it any more
  if (error && !(sent_all_ && finished_))
    fail(peer_reset_why(error), false);
}

StreamStatus QuicStream::status() const {
  StreamStatus s;
  s.bytes_out = app_taken_;
  s.bytes_in = delivered_;
  s.end_sent = fin_sent_;
  if (peer_fin_) s.peer_end = delivered_ + (rx_.size() - rx_head_);
  if (queued) s.waiting.push_back("quic_send");
  if (id_ < 0) s.waiting.push_back(opener_ ? "quic_open" : "quic_peer_stream");
  return s;
}

// ---- binding -------------------------------------------------------------------

void QuicStream::bind(Connection& c, int64_t id) {
  conn_ = &c;
  id_ = id;
}

void QuicStream::adopt(Incoming& in) {
  conn_ = in.conn;
  id_ = in.id;
  auto* b = in.data.data();
  rx_.assign(b, b + in.data.size());
  rx_next_ = in.next;
  peer_fin_ = in.fin;
  // The header was taken in: the peer may send that much more.
  ngtcp2_conn_extend_max_stream_offset(conn_->get(), id_, StreamHeader::kSize);
  if (in.reset) fail_why_ = "the peer reset the connection";
  if (started_) {
    if (!fail_why_.empty()) return fail(fail_why_, true);
    deliver();
    if (!retired_) pull();
  }
}

// ---- application -> peer -----------------------------------------------------

std::byte* QuicStream::at(uint64_t off) {
  uint64_t rel = off - base_;
  return chunks_[rel / Chunk::kSize]->data + rel % Chunk::kSize;
}

void QuicStream::pull() {
  if (retired_ || !started_ || !conn_ || id_ < 0 || closed_ || shut_) return;
  ngtcp2_conn* c = conn_->get();
  for (;;) {
    app_final_ = port_->final_length();
    if (eof()) break;
    // As far as the peer's credit goes, and no further than we keep.
    uint64_t credit = std::min(ngtcp2_conn_get_max_stream_data_left(c, id_),
                               ngtcp2_conn_get_max_data_left(c));
    uint64_t pending = written_ - sent_;
    uint64_t room = credit > pending ? credit - pending : 0;
    uint64_t held = written_ - acked_;
    room = std::min(room, m_.settings().max_buffered > held ? m_.settings().max_buffered - held : 0);
    if (room == 0) break;  // the peer's credit (on_credit) or an ACK calls again
    bool fresh = written_ == base_ + chunks_.size() * Chunk::kSize;
    if (fresh) chunks_.push_back(m_.chunks().take());
    size_t tail = Chunk::kSize - (written_ - base_) % Chunk::kSize;
    iovec iov{at(written_), static_cast<size_t>(std::min<uint64_t>(room, tail))};
    ssize_t n = port_->read(&iov, 1);
    if (n < 0) return fail("the application's side broke", true);
    if (n == 0) {
      if (fresh) {
        m_.chunks().give(std::move(chunks_.back()));
        chunks_.pop_back();
      }
      app_final_ = port_->final_length();
      break;
    }
    written_ += static_cast<uint64_t>(n);
    app_taken_ += static_cast<uint64_t>(n);
  }
  if (has_unsent()) conn_->want_send(*this);
}

size_t QuicStream::unsent(ngtcp2_vec* v, size_t n, bool* fin) const {
  size_t k = 0;
  uint64_t off = sent_;
  while (k < n && off < written_) {
    uint64_t rel = off - base_;
    size_t in_chunk = Chunk::kSize - rel % Chunk::kSize;
    size_t len = static_cast<size_t>(std::min<uint64_t>(in_chunk, written_ - off));
    v[k].base = reinterpret_cast<uint8_t*>(chunks_[rel / Chunk::kSize]->data + rel % Chunk::kSize);
    v[k].len = len;
    off += len;
    k++;
  }
  *fin = eof() && off == written_ && !fin_sent_;
  return k;
}

void QuicStream::wrote(size_t n, bool fin) {
  sent_ += n;
  if (fin && sent_ == written_) fin_sent_ = true;
}

void QuicStream::on_acked(uint64_t offset, uint64_t len) {
  acked_ = std::max(acked_, offset + len);
  while (!chunks_.empty() && base_ + Chunk::kSize <= acked_) {
    m_.chunks().give(std::move(chunks_.front()));
    chunks_.pop_front();
    base_ += Chunk::kSize;
  }
  if (fin_sent_ && acked_ == written_ && !sent_all_) {
    sent_all_ = true;
    port_->sent_all();  // the application side may retire the stream
    return;
  }
  pull();  // room to keep more
}

// ---- peer -> application -----------------------------------------------------

void QuicStream::on_data(uint64_t offset, const uint8_t* data, size_t len, bool fin) {
  if (inbound_dead_ || retired_) return;
  if (offset != rx_next_) {
    // ngtcp2 promises in-order, non-overlapping data; if it ever broke that
    // promise, a reset is the only honest answer.
    return fail("QUIC stream data out of order (offset " + std::to_string(offset) +
                    ", expected " + std::to_string(rx_next_) + ")",
                true);
  }
  rx_next_ += len;
  auto* b = reinterpret_cast<const std::byte*>(data);
  rx_.insert(rx_.end(), b, b + len);
  peer_fin_ = peer_fin_ || fin;
  // Handed over once the batch of packets is read: one write into the
  // application per stream per batch, not one per packet.
  if (started_ && !deliver_queued) {
    deliver_queued = true;
    m_.deliver_later(*this);
  }
}

void QuicStream::deliver() {
  if (retired_ || !started_) return;
  while (!inbound_dead_ && rx_head_ < rx_.size()) {
    std::span<const std::byte> r(rx_.data() + rx_head_, rx_.size() - rx_head_);
    ssize_t n = port_->deliver(r);
    if (n < 0) return reset(kAppGone);  // counted
    rx_head_ += static_cast<size_t>(n);
    credit(static_cast<size_t>(n));
    if (static_cast<size_t>(n) < r.size()) break;  // on_app_room calls again
  }
  if (rx_head_ == rx_.size()) {
    rx_.clear();  // the capacity stays
    rx_head_ = 0;
  } else if (rx_head_ >= (256u << 10) && rx_head_ * 2 >= rx_.size()) {
    rx_.erase(rx_.begin(), rx_.begin() + static_cast<ptrdiff_t>(rx_head_));
    rx_head_ = 0;
  }
  if (peer_fin_ && rx_.empty() && !finished_ && !inbound_dead_) {
    finished_ = true;
    port_->peer_finished();
  }
}

void QuicStream::credit(size_t n) {
  delivered_ += n;
  if (n == 0 || !conn_ || closed_ || conn_->dead()) return;
  ngtcp2_conn_extend_max_stream_offset(conn_->get(), id_, n + grow_window());
  m_.dirty(*conn_);
}

uint64_t QuicStream::grow_window() {
  if (delivered_ - window_mark_ < window_ / 2) return 0;
  Time now = m_.host().now();
  uint64_t extra = 0;
  uint64_t most = m_.settings().max_stream_window;
  if (window_at_ != Time{} && window_ < most) {
    ngtcp2_conn_stat st;
    ngtcp2_conn_get_conn_stat(conn_->get(), &st);
    if (now - window_at_ < 2 * std::chrono::nanoseconds(st.smoothed_rtt)) {
      extra = std::min(window_, most - window_);
      window_ += extra;
    }
  }
  window_mark_ = delivered_;
  window_at_ = now;
  return extra;
}

}  // namespace hooker::quic
