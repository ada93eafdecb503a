// The `quic` mechanism: moved TCP connections as streams of one QUIC
// connection per pair of hookerds (per peer address and congestion
// control: a rule's `quic:cc=...` gets a connection of its own), opened on demand and
// kept while used, over one datagram I/O (a UDP socket with GSO/GRO in
// hookerd, an in-memory link in the conformance suite). ngtcp2 does the
// protocol (loss recovery, congestion control, flow control, encryption);
// GnuTLS authenticates both hookerds (tls.h).
#pragma once

#include <array>
#include <cstring>
#include <memory>
#include <unordered_map>
#include <vector>

#include <ngtcp2/ngtcp2.h>

#include "mech/mechanism.h"
#include "mech/quic/connection.h"
#include "mech/quic/stream.h"
#include "mech/quic/tls.h"

namespace hooker::quic {

struct Counters {
  uint64_t rx_malformed = 0, rx_unknown_cid = 0, rx_not_initial = 0;
  uint64_t conns_opened = 0, conns_accepted = 0, conns_idle_closed = 0, conns_failed = 0;
  uint64_t conns_early = 0;  // of conns_opened: started at a SYN (prepare)
  uint64_t handshakes_failed = 0, streams_opened = 0, streams_accepted = 0;
  uint64_t streams_unknown_token = 0, streams_refused = 0, streams_reset = 0;
};

// Connection IDs as hash keys, without allocating.
struct CidKey {
  uint8_t len = 0;
  std::array<uint8_t, NGTCP2_MAX_CIDLEN> data{};
  CidKey() = default;
  CidKey(const uint8_t* d, size_t n) : len(static_cast<uint8_t>(n)) { std::memcpy(data.data(), d, n); }
  explicit CidKey(const ngtcp2_cid& c) : CidKey(c.data, c.datalen) {}
  bool operator==(const CidKey& o) const {
    return len == o.len && std::memcmp(data.data(), o.data.data(), len) == 0;
  }
};
struct CidHash {
  size_t operator()(const CidKey& k) const {
    uint64_t h = 0;  // connection IDs are random: their first bytes hash them
    std::memcpy(&h, k.data.data(), 8);
    return h ^ k.len;
  }
};

struct PeerKey {
  std::array<uint8_t, 18> b{};  // address and port
  explicit PeerKey(const sockaddr_in6& a) {
    std::memcpy(b.data(), &a.sin6_addr, 16);
    std::memcpy(b.data() + 16, &a.sin6_port, 2);
  }
  bool operator==(const PeerKey& o) const { return b == o.b; }
};
struct PeerHash {
  size_t operator()(const PeerKey& k) const {
    uint64_t h[2];
    std::memcpy(h, k.b.data() + 2, 16);
    return h[0] * 31 + h[1];
  }
};

struct QuicSettings {
  ngtcp2_cc_algo cc = NGTCP2_CC_ALGO_BBR;
  Clock::duration idle_timeout = std::chrono::seconds(10);
  Clock::duration keep_alive = std::chrono::seconds(3);  // while streams use it
  uint64_t stream_window = 1 << 20;     // initial credit per stream
  uint64_t max_stream_window = 6 << 20; // hookerd grows it up to this
  uint64_t conn_window = 16 << 20;
  uint64_t max_conn_window = 64 << 20;
  uint64_t max_buffered = 4 << 20;      // a stream's unacknowledged bytes
  uint16_t peer_port_offset = 0;  // the peer's QUIC port: the TCP option's + this
};

class QuicMechanism final : public Mechanism {
 public:
  static constexpr size_t kCidLen = 16;  // one length for both roles

  QuicMechanism(MechHost& host, std::unique_ptr<DatagramIo> io, Credentials cred,
                QuicSettings settings);
  ~QuicMechanism() override;

  std::vector<int> fds() const override;
  void on_readable(int fd) override;
  void on_writable(int) override { flush(); }
  void flush() override;
  void reap() override;
  void housekeeping() override;
  Time deadline() const override;
  void on_deadline(Time now) override;
  std::unique_ptr<MechConn> open(const PeerInfo& peer, AppPort& port) override;
  void refuse(const PeerInfo& peer) override;
  void status(nlohmann::json& out) const override;
  std::vector<std::string> loaded() const override;

  // For connections and streams.
  MechHost& host() { return host_; }
  DatagramIo& io() { return *io_; }
  Counters& counters() { return cnt_; }
  const QuicSettings& settings() const { return settings_; }
  gnutls_certificate_credentials_t credentials() const { return cred_.get(); }
  ChunkPool& chunks() { return chunks_; }
  bool make_room();  // room in the send queue, flushing it if full
  void dirty(Connection& c);
  void deliver_later(QuicStream& s) { deliver_.push_back(&s); }
  void add_cid(const ngtcp2_cid& cid, Connection& c);
  void remove_cid(const ngtcp2_cid& cid);
  void on_dead(Connection& c, std::string_view why);  // unregistered now, deleted at reap
  void match(Incoming& in);         // an accepted stream's header arrived
  void forget(Incoming& in);        // it closed before it was bound
  // A peer's stream that names no connection here: counted, said in a
  // connection line, and reset with kErrUnknownToken (the peer says so).
  void turn_away(Incoming& in, std::string_view why);
  void forget(QuicStream& s);       // retired before its stream arrived
  bool refused(uint64_t token) const { return refused_.count(token) > 0; }
  // The connecting side: its SYN started the QUIC connection the stream
  // goes on, so the accepting side never opens a second one to it.
  static bool opens(const PeerInfo& p) { return p.active; }
  void prepare(const sockaddr_in6& peer, const std::string& opts) override;

 private:
  void on_datagram(const sockaddr_in6& from, std::span<const std::byte> d);
  // Connections to one peer are apart by congestion control: a rule's
  // `quic:cc=...` (opts), else --quic-cc.
  ngtcp2_cc_algo cc_for(const std::string& opts) const;
  Connection* connection_to(const sockaddr_in6& peer, ngtcp2_cc_algo cc, std::string* why);
  sockaddr_in6 quic_addr(const sockaddr_in6& peer) const;  // its QUIC socket
  void flush_io();
  void write_dirty();

  MechHost& host_;
  std::unique_ptr<DatagramIo> io_;
  Credentials cred_;
  QuicSettings settings_;
  ChunkPool chunks_;
  bool tx_blocked_ = false;
  std::vector<std::unique_ptr<Connection>> conns_;
  std::vector<std::unique_ptr<Connection>> dead_;  // freed at reap
  std::unordered_map<CidKey, Connection*, CidHash> by_cid_;
  std::unordered_map<PeerKey, std::vector<Connection*>, PeerHash> by_peer_;
  std::vector<Connection*> dirty_, writing_, due_;
  // Streams that got bytes in this batch (retired ones stay readable until
  // the turn ends: each is checked).
  std::vector<QuicStream*> deliver_;
  std::unordered_map<uint64_t, QuicStream*> awaiting_;  // ours, for the peer's stream
  std::unordered_map<uint64_t, Incoming*> pending_;     // the peer's, for our open()
  // Tokens refused here or by the peer, and when: forgotten after a while.
  std::unordered_map<uint64_t, Time> refused_;
  // Streams that only carry a refusal to the peer (refuse(), opener's side).
  struct Refusal;
  std::vector<std::unique_ptr<Refusal>> refusals_;
  Counters cnt_;
};

}  // namespace hooker::quic
