// One QUIC connection between two hookerds (ngtcp2 with GnuTLS): every
// moved TCP connection between them is a stream on it. It reads the
// peer's packets, writes its own into the mechanism's datagram I/O (as
// many as ngtcp2's send quantum and pacing allow, grouped for GSO by the
// I/O); its timers run as the mechanism's (Mechanism::deadline).
// If it dies, every stream on it ends in a reset, loudly.
#pragma once

#include <netinet/in.h>

#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include "mech/mechanism.h"
#include "mech/quic/tls.h"

namespace hooker::quic {

class QuicMechanism;
class QuicStream;
class StreamSink;
struct Incoming;

struct ConnFree {
  void operator()(ngtcp2_conn* c) const { ngtcp2_conn_del(c); }
};

uint64_t to_ns(Time t);
const char* cc_name(ngtcp2_cc_algo cc);  // as rules and --quic-cc say it
Time from_ns(uint64_t ns);

class Connection {
 public:
  static constexpr size_t kMaxBurst = 44;  // packets per write: one GSO group (UdpSocket::kGsoMax)
  // To `peer` (we are the QUIC client), with congestion control `cc`
  // both ends use: it is told in the first byte of the Initial's DCID.
  static Result<std::unique_ptr<Connection>> connect(QuicMechanism& m, const sockaddr_in6& peer,
                                                     ngtcp2_cc_algo cc);
  // From `peer`, whose first Initial packet `hd` describes.
  static Result<std::unique_ptr<Connection>> accept(QuicMechanism& m, const sockaddr_in6& peer,
                                                    const ngtcp2_pkt_hd& hd);
  ~Connection();

  void read(const sockaddr_in6& from, std::span<const std::byte> pkt);
  void write();  // what ngtcp2 has to send, into the datagram I/O
  void on_expiry();
  Time expiry() const;
  Time silent_until() const;  // a used connection whose peer is silent dies then
  // The peer must learn why: CONNECTION_CLOSE unless it closed it itself.
  void die(std::string_view why, bool tell_peer);
  void unreachable();  // tells hookerd the peer's host stays TCP for a while

  // Streams.
  void open_stream(QuicStream& s);  // now, or once the handshake allows
  void want_send(QuicStream& s);    // it has bytes or a FIN to send
  void adopt(Incoming& in, QuicStream& s);  // an accepted stream gets its MechConn
  void drop_incoming(int64_t id, uint64_t code);  // refuse an accepted stream
  void remove(QuicStream& s);       // retired: out of every table here
  void reap() { dropped_.clear(); }  // the end of a loop turn

  ngtcp2_conn* get() const { return conn_.get(); }
  const sockaddr_in6& peer() const { return peer_; }
  bool dead() const { return dead_; }
  bool established() const;
  bool server() const { return server_; }
  ngtcp2_cc_algo cc() const { return cc_; }
  size_t members() const { return members_.size(); }
  // For choosing among two connections to one peer (simultaneous opens):
  // both ends see the same value for a connection.
  ngtcp2_cid initial_dcid() const;
  void status(nlohmann::json& out) const;

  bool dirty = false;  // in the mechanism's list of those to write

 private:
  void add_member(QuicStream& s);
  Connection(QuicMechanism& m, const sockaddr_in6& peer, bool server, ngtcp2_cc_algo cc);
  Status init(const ngtcp2_pkt_hd* hd);
  void open_pending();
  void register_cid(const ngtcp2_cid& cid);
  std::string close_reason() const;

  // ngtcp2's callbacks (user_data: the Connection).
  static int on_handshake_completed(ngtcp2_conn*, void* ud);
  static int on_recv_stream_data(ngtcp2_conn*, uint32_t flags, int64_t id, uint64_t offset,
                                 const uint8_t* data, size_t len, void* ud, void* sud);
  static int on_acked(ngtcp2_conn*, int64_t id, uint64_t offset, uint64_t len, void* ud,
                      void* sud);
  static int on_stream_open(ngtcp2_conn*, int64_t id, void* ud);
  static int on_stream_close(ngtcp2_conn*, uint32_t flags, int64_t id, uint64_t code, void* ud,
                             void* sud);
  static int on_stream_reset(ngtcp2_conn*, int64_t id, uint64_t final_size, uint64_t code,
                             void* ud, void* sud);
  static int on_extend_streams(ngtcp2_conn*, uint64_t max, void* ud);
  static int on_extend_stream_data(ngtcp2_conn*, int64_t id, uint64_t max, void* ud, void* sud);
  static void on_rand(uint8_t* dest, size_t len, const ngtcp2_rand_ctx*);
  static int on_new_cid(ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token, size_t len, void* ud);
  static int on_remove_cid(ngtcp2_conn*, const ngtcp2_cid* cid, void* ud);
  static ngtcp2_conn* get_conn(ngtcp2_crypto_conn_ref* ref);

  QuicMechanism& m_;
  sockaddr_in6 peer_, local_{};
  ngtcp2_path path_{};
  bool server_;
  ngtcp2_cc_algo cc_;
  SessionRef ref_;
  Session tls_;  // before conn_: ngtcp2_conn_del still uses it
  std::unique_ptr<ngtcp2_conn, ConnFree> conn_;
  bool dead_ = false;
  // The last packet from the peer. ngtcp2 counts its idle timeout from our
  // first ack-eliciting packet after it, so with keep-alives a dead peer
  // would be noticed a keep-alive interval late; while streams use the
  // connection, this counts it from the peer's silence.
  Time last_rx_;
  bool heard_ = false;  // a packet of the peer's was read
  ngtcp2_connection_close_error last_error_{};
  std::vector<ngtcp2_cid> cids_;  // ours, in the mechanism's table

  std::unordered_map<int64_t, std::unique_ptr<Incoming>> incoming_;  // not bound yet
  std::vector<std::unique_ptr<Incoming>> dropped_;  // freed at reap: maybe inside their call
  std::vector<QuicStream*> members_;  // every stream of ours using it, opened or not
  std::vector<QuicStream*> to_open_;  // waiting for the handshake or stream credit
  std::deque<QuicStream*> sendq_;     // with bytes to send, round robin
  std::vector<QuicStream*> stopped_;  // found shut for writing by write()
};

}  // namespace hooker::quic
