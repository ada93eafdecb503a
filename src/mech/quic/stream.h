// One moved TCP connection on `quic`: a bidirectional QUIC stream.
//
// The connecting side opens it (on the QUIC connection its SYN started),
// and its first bytes are a header naming the connection (StreamHeader), so the
// accepting side matches it to the PeerInfo hookerd gave it. A write-side
// close is the stream's FIN; a reset is RESET_STREAM + STOP_SENDING and
// AppPort::abort on both ends.
//
// Back-pressure is QUIC's flow control: the application's bytes are read
// only as far as the peer's stream and connection credit go, and the
// stream credit we give grows only as bytes are handed to AppPort::deliver
// (the connection credit as soon as hookerd has taken them in, so one slow
// reader holds up its own stream only). ngtcp2 does not copy stream data:
// the bytes stay in the stream's chunks until the peer acknowledged them.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ngtcp2/ngtcp2.h>

#include "mech/mechanism.h"

namespace hooker::quic {

class Connection;
class QuicMechanism;

// The opener's first bytes on a stream.
struct StreamHeader {
  static constexpr uint32_t kMagic = 0x484b5131;  // "HKQ1"
  static constexpr size_t kSize = 24;
  static constexpr uint8_t kRefused = 1;  // the opener refuses the connection: nothing follows
  uint8_t flags = 0;
  uint64_t to_token = 0;    // the accepting side's token
  uint64_t from_token = 0;  // the opener's
  void encode(uint8_t* out) const;
  static std::optional<StreamHeader> decode(const uint8_t* in);  // nullopt: not ours
};

// Application error codes on RESET_STREAM / STOP_SENDING.
enum : uint64_t {
  kErrReset = 1,        // hookerd reset the connection (an RST, a failure)
  kErrGone = 2,         // the application left while the peer still sent
  kErrUnknownToken = 3, // no connection here by that token
  kErrRefused = 4,      // negotiated, but never bound here
};
// What a peer's RESET_STREAM with `code` means, for the reset's line.
const char* peer_reset_why(uint64_t code);

// What ngtcp2's stream callbacks reach (the stream's user data).
class StreamSink {
 public:
  // The stream's next bytes, at stream offset `offset` (ngtcp2 hands them
  // over in order; checked all the same: a wrong byte must never pass).
  virtual void on_data(uint64_t offset, const uint8_t* data, size_t len, bool fin) = 0;
  virtual void on_acked(uint64_t offset, uint64_t len) = 0;
  virtual void on_credit() = 0;                   // the peer extended our credit
  virtual void on_reset(std::string_view why) = 0; // RESET_STREAM or STOP_SENDING
  // ngtcp2 forgot the stream; `error`: the application error code it
  // ended with (a reset), 0 if it ended well.
  virtual void on_closed(uint64_t error) = 0;
  // The QUIC connection died: no ngtcp2 call may follow.
  virtual void on_connection_dead(std::string_view why) = 0;

 protected:
  ~StreamSink() = default;
};

// Send buffer memory, in fixed chunks reused across streams: stable
// addresses for ngtcp2, no allocation per packet.
struct Chunk {
  static constexpr size_t kSize = 64 * 1024;
  std::byte data[kSize];
};
class ChunkPool {
 public:
  std::unique_ptr<Chunk> take();
  void give(std::unique_ptr<Chunk> c);
  size_t idle() const { return free_.size(); }

 private:
  static constexpr size_t kKeep = 256;  // idle chunks kept (16 MB)
  std::vector<std::unique_ptr<Chunk>> free_;
};

// A peer's stream whose header has not arrived yet, or whose connection
// hookerd has not bound yet (the application side opens it later). Its
// bytes wait here, within the stream credit we gave it.
struct Incoming final : StreamSink {
  Incoming(QuicMechanism& m, Connection& c, int64_t id) : m(m), conn(&c), id(id) {}
  void on_data(uint64_t offset, const uint8_t* data, size_t len, bool fin) override;
  void on_acked(uint64_t, uint64_t) override {}
  void on_credit() override {}
  void on_reset(std::string_view why) override;
  void on_closed(uint64_t error) override;
  void on_connection_dead(std::string_view) override { conn = nullptr; }

  QuicMechanism& m;
  Connection* conn;
  int64_t id;
  uint8_t head[StreamHeader::kSize];
  size_t head_len = 0;
  std::optional<StreamHeader> header;
  std::vector<std::byte> data;  // after the header
  uint64_t next = 0;            // stream offset of the next byte
  bool fin = false, reset = false;
};

class QuicStream final : public MechConn, public StreamSink {
 public:
  // `opener`: this side opens the stream (its header goes first).
  QuicStream(QuicMechanism& m, const PeerInfo& peer, AppPort& port, bool opener);
  ~QuicStream() override;

  // MechConn
  void start() override;
  void on_app_readable() override;
  void on_app_room() override { deliver(); }
  void on_deadline(Time now) override;
  void reset(std::string_view why) override;
  void retire() override;
  StreamStatus status() const override;

  // StreamSink
  void on_data(uint64_t offset, const uint8_t* data, size_t len, bool fin) override;
  void on_acked(uint64_t offset, uint64_t len) override;
  void on_credit() override { pull(); }
  void on_reset(std::string_view why) override;
  void on_closed(uint64_t error) override;
  void on_connection_dead(std::string_view why) override;

  // From the connection and the mechanism.
  void bind(Connection& c, int64_t id);  // the stream exists in ngtcp2 now
  void adopt(Incoming& in);               // an accepted stream's early bytes
  // What the connection may put in a packet now: up to 3 vectors of unsent
  // bytes, and whether the FIN goes with them.
  size_t unsent(ngtcp2_vec* v, size_t n, bool* fin) const;
  void wrote(size_t n, bool fin);  // ngtcp2 took n bytes (and the FIN)
  bool has_unsent() const { return written_ > sent_ || (eof() && !fin_sent_); }
  void pull();  // the application's bytes, as far as credit goes
  const PeerInfo& peer() const { return peer_; }
  Connection* conn() const { return conn_; }
  int64_t id() const { return id_; }
  bool opener() const { return opener_; }
  void mark_refusal();  // its header says the connection is refused
  bool retired() const { return retired_; }

  bool queued = false;  // in its connection's send queue
  bool deliver_queued = false;  // in the mechanism's list for the batch's end
  void deliver();       // buffered peer bytes -> application

 private:
  void credit(size_t n);  // n more bytes handed over: the peer may send them
  uint64_t grow_window();  // extra credit when the application keeps up
  void fail(std::string_view why, bool tell_peer);
  void detach();       // out of the connection's tables, no ngtcp2 call after
  bool eof() const { return app_final_ && app_taken_ == *app_final_; }
  std::byte* at(uint64_t off);  // where stream offset `off` is kept

  QuicMechanism& m_;
  PeerInfo peer_;
  AppPort* port_;
  bool opener_;
  Connection* conn_ = nullptr;
  int64_t id_ = -1;
  bool retired_ = false, closed_ = false, shut_ = false;
  bool started_ = false;  // the application side holds it (start())
  std::string fail_why_;  // failed before start(): told then
  Time await_until_ = kNever;  // accepting: the peer's stream must come by then

  // application -> peer, in stream offsets (the header included)
  std::deque<std::unique_ptr<Chunk>> chunks_;
  uint64_t base_ = 0;     // offset of chunks_.front()
  uint64_t written_ = 0;  // read from the application (and the header)
  uint64_t sent_ = 0;     // handed to ngtcp2
  uint64_t acked_ = 0;    // acknowledged, contiguously
  uint64_t app_taken_ = 0;
  std::optional<uint64_t> app_final_;
  bool fin_sent_ = false, sent_all_ = false;

  // peer -> application
  std::vector<std::byte> rx_;  // received, not yet delivered: rx_[rx_head_..]
  size_t rx_head_ = 0;
  uint64_t delivered_ = 0;
  uint64_t rx_next_ = 0;  // stream offset of the next byte from the peer
  bool peer_fin_ = false, finished_ = false;
  bool inbound_dead_ = false;  // the application takes no more
  bool peer_heard_ = false;    // the peer reset or stopped the stream itself
  // The peer's credit: the window ahead of what the application took.
  // It doubles (up to QuicSettings::max_stream_window) when the
  // application took half of it within two RTTs. hookerd grows it, not
  // ngtcp2 (ngtcp2_settings.max_stream_window): 0.12's growth could put a
  // larger limit in a MAX_STREAM_DATA frame than it then enforced, when
  // the frame did not fit the packet it was made for, and the peer's
  // next bytes killed the whole QUIC connection with FLOW_CONTROL_ERROR
  // (fixed upstream in 0.19).
  uint64_t window_;
  uint64_t window_mark_ = 0;  // delivered_ when the window was last weighed
  Time window_at_{};          // and when
};

}  // namespace hooker::quic
