// One QUIC connection: ngtcp2's state, its callbacks turned into calls on
// the streams, and the packets in and out.
#include "mech/quic/connection.h"

#include "core/abi.h"

#include <arpa/inet.h>
#include <gnutls/crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "core/flow.h"
#include "mech/quic/quic.h"
#include "mech/quic/stream.h"

namespace hooker::quic {

uint64_t to_ns(Time t) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
}
Time from_ns(uint64_t ns) {
  if (ns == UINT64_MAX) return kNever;
  return Time(std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(ns)));
}


namespace {
// The congestion control a client asks for, in the first byte of the
// Initial's DCID (the server reads it before it creates its side); the other
// bytes stay random. Another byte (an older client's) means the server's own.
constexpr uint8_t kCidCubic = 1, kCidBbr = 2;
uint8_t cid_mark(ngtcp2_cc_algo cc) { return cc == NGTCP2_CC_ALGO_CUBIC ? kCidCubic : kCidBbr; }
ngtcp2_cc_algo cc_of_cid(const ngtcp2_cid& dcid, ngtcp2_cc_algo fallback) {
  if (dcid.datalen == 0) return fallback;
  if (dcid.data[0] == kCidCubic) return NGTCP2_CC_ALGO_CUBIC;
  if (dcid.data[0] == kCidBbr) return NGTCP2_CC_ALGO_BBR;
  return fallback;
}
}  // namespace

const char* cc_name(ngtcp2_cc_algo cc) {
  switch (cc) {
    case NGTCP2_CC_ALGO_CUBIC: return "cubic";
    case NGTCP2_CC_ALGO_BBR: return "bbr";
    default: return "other";
  }
}

Connection::Connection(QuicMechanism& m, const sockaddr_in6& peer, bool server, ngtcp2_cc_algo cc)
    : m_(m), peer_(peer), server_(server), cc_(cc) {
  // The socket is unconnected (one for every peer): every packet has the
  // same local address as far as ngtcp2 knows.
  local_.sin6_family = AF_INET6;
  path_.local = {reinterpret_cast<sockaddr*>(&local_), sizeof(local_)};
  path_.remote = {reinterpret_cast<sockaddr*>(&peer_), sizeof(peer_)};
  ref_.conn_ref.get_conn = get_conn;
  ref_.conn_ref.user_data = this;
  ref_.peer = peer;
  ngtcp2_connection_close_error_default(&last_error_);
  last_rx_ = m.host().now();
}

Connection::~Connection() {
  // Streams still here see the end before the memory goes.
  if (!dead_) die("hookerd closed the mechanism", true);
}

Result<std::unique_ptr<Connection>> Connection::connect(QuicMechanism& m,
                                                        const sockaddr_in6& peer,
                                                        ngtcp2_cc_algo cc) {
  std::unique_ptr<Connection> c(new Connection(m, peer, false, cc));
  if (auto st = c->init(nullptr); !st) return st.error();
  return c;
}

Result<std::unique_ptr<Connection>> Connection::accept(QuicMechanism& m, const sockaddr_in6& peer,
                                                       const ngtcp2_pkt_hd& hd) {
  std::unique_ptr<Connection> c(
      new Connection(m, peer, true, cc_of_cid(hd.dcid, m.settings().cc)));
  if (auto st = c->init(&hd); !st) return st.error();
  return c;
}

Status Connection::init(const ngtcp2_pkt_hd* hd) {
  ngtcp2_callbacks cb{};
  cb.client_initial = ngtcp2_crypto_client_initial_cb;
  cb.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
  cb.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
  cb.encrypt = ngtcp2_crypto_encrypt_cb;
  cb.decrypt = ngtcp2_crypto_decrypt_cb;
  cb.hp_mask = ngtcp2_crypto_hp_mask_cb;
  cb.recv_retry = ngtcp2_crypto_recv_retry_cb;
  cb.update_key = ngtcp2_crypto_update_key_cb;
  cb.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
  cb.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
  cb.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
  cb.version_negotiation = ngtcp2_crypto_version_negotiation_cb;
  if (server_) cb.client_initial = nullptr;
  else cb.recv_client_initial = nullptr;
  cb.handshake_completed = on_handshake_completed;
  cb.recv_stream_data = on_recv_stream_data;
  cb.acked_stream_data_offset = on_acked;
  cb.stream_open = on_stream_open;
  cb.stream_close = on_stream_close;
  cb.stream_reset = on_stream_reset;
  cb.extend_max_local_streams_bidi = on_extend_streams;
  cb.extend_max_stream_data = on_extend_stream_data;
  cb.rand = on_rand;
  cb.get_new_connection_id = on_new_cid;
  cb.remove_connection_id = on_remove_cid;

  const QuicSettings& qs = m_.settings();
  ngtcp2_settings s;
  ngtcp2_settings_default(&s);
  s.initial_ts = to_ns(m_.host().now());
  s.cc_algo = cc_;
  s.max_window = qs.max_conn_window;
  // Each stream's window is grown by QuicStream (see window_ there).
  s.max_stream_window = 0;
  s.max_tx_udp_payload_size = DatagramIo::kMaxDatagram;
  s.no_pmtud = 1;
  s.handshake_timeout = static_cast<ngtcp2_duration>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(qs.idle_timeout).count());

  ngtcp2_transport_params p;
  ngtcp2_transport_params_default(&p);
  // The defaults are 0: nothing would flow.
  p.initial_max_stream_data_bidi_local = qs.stream_window;
  p.initial_max_stream_data_bidi_remote = qs.stream_window;
  p.initial_max_data = qs.conn_window;
  p.initial_max_streams_bidi = 1024;
  p.initial_max_streams_uni = 0;
  p.max_idle_timeout = s.handshake_timeout;

  ngtcp2_cid scid;
  scid.datalen = QuicMechanism::kCidLen;
  gnutls_rnd(GNUTLS_RND_NONCE, scid.data, scid.datalen);
  ngtcp2_conn* raw = nullptr;
  int rv;
  if (server_) {
    p.original_dcid = hd->dcid;
    p.stateless_reset_token_present = 1;
    gnutls_rnd(GNUTLS_RND_NONCE, p.stateless_reset_token, sizeof(p.stateless_reset_token));
    rv = ngtcp2_conn_server_new(&raw, &hd->scid, &scid, &path_, hd->version, &cb, &s, &p,
                                nullptr, this);
  } else {
    ngtcp2_cid dcid;
    dcid.datalen = QuicMechanism::kCidLen;
    gnutls_rnd(GNUTLS_RND_NONCE, dcid.data, dcid.datalen);
    dcid.data[0] = cid_mark(cc_);
    rv = ngtcp2_conn_client_new(&raw, &dcid, &scid, &path_, NGTCP2_PROTO_VER_V1, &cb, &s, &p,
                                nullptr, this);
  }
  if (rv != 0)
    return Error{"start a QUIC connection with " + to_string(peer_) + ": " + ngtcp2_strerror(rv), 0};
  conn_.reset(raw);
  auto tls = new_session(server_, m_.credentials(), &ref_);
  if (!tls) return tls.error();
  tls_ = tls.take();
  ngtcp2_conn_set_tls_native_handle(conn_.get(), tls_.get());
  register_cid(scid);
  if (server_) register_cid(hd->dcid);  // the client's Initials still name it
  return ok();
}

void Connection::register_cid(const ngtcp2_cid& cid) {
  cids_.push_back(cid);
  m_.add_cid(cid, *this);
}

ngtcp2_conn* Connection::get_conn(ngtcp2_crypto_conn_ref* ref) {
  return static_cast<Connection*>(ref->user_data)->conn_.get();
}

bool Connection::established() const {
  return !dead_ && ngtcp2_conn_get_handshake_completed(conn_.get());
}

ngtcp2_cid Connection::initial_dcid() const {
  return *ngtcp2_conn_get_client_initial_dcid(conn_.get());
}

// ---- packets in --------------------------------------------------------------

void Connection::read(const sockaddr_in6& from, std::span<const std::byte> pkt) {
  if (dead_) return;
  last_rx_ = m_.host().now();
  sockaddr_in6 remote = from;
  ngtcp2_path path{path_.local, {reinterpret_cast<sockaddr*>(&remote), sizeof(remote)}, nullptr};
  ngtcp2_pkt_info pi{};
  int rv = ngtcp2_conn_read_pkt(conn_.get(), &path, &pi,
                                reinterpret_cast<const uint8_t*>(pkt.data()), pkt.size(),
                                to_ns(m_.host().now()));
  if (rv == 0) {
    heard_ = true;
    m_.dirty(*this);
    return;
  }
  switch (rv) {
    case NGTCP2_ERR_DRAINING: {  // the peer closed it
      ngtcp2_connection_close_error e;
      ngtcp2_conn_get_connection_close_error(conn_.get(), &e);
      bool tls = e.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_TRANSPORT &&
                 e.error_code >= 0x100 && e.error_code < 0x200;
      if (tls) {
        m_.counters().handshakes_failed++;
        unreachable();
      }
      return die(tls ? "QUIC handshake failed: the peer refused it (" + close_reason() + ")"
                     : "the peer closed the QUIC connection (" + close_reason() + ")",
                 false);
    }
    case NGTCP2_ERR_DROP_CONN:
      return die("the QUIC connection was dropped", false);
    case NGTCP2_ERR_CRYPTO: {
      m_.counters().handshakes_failed++;
      std::string why = ref_.refused;
      uint8_t alert = ngtcp2_conn_get_tls_alert(conn_.get());
      ngtcp2_connection_close_error_set_transport_error_tls_alert(&last_error_, alert, nullptr, 0);
      if (why.empty()) {
        const char* name = gnutls_alert_get_name(static_cast<gnutls_alert_description_t>(alert));
        why = std::string("TLS alert ") + (name ? name : std::to_string(alert));
      }
      // Worth a line even with no stream waiting: a peer was refused.
      m_.host().log("quic: handshake with " + to_string(peer_) + " failed: " + why, log::Level::kWarn);
      unreachable();
      return die("QUIC handshake failed: " + why, true);
    }
    default:
      ngtcp2_connection_close_error_set_transport_error_liberr(&last_error_, rv, nullptr, 0);
      return die(std::string("QUIC error: ") + ngtcp2_strerror(rv), true);
  }
}

std::string Connection::close_reason() const {
  ngtcp2_connection_close_error e;
  ngtcp2_conn_get_connection_close_error(conn_.get(), &e);
  std::string s = e.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION
                      ? "application error "
                      : "transport error ";
  s += std::to_string(e.error_code);
  // 0x100 + alert: TLS refused the handshake (a certificate, say).
  if (e.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_TRANSPORT && e.error_code > 0x100 &&
      e.error_code < 0x200) {
    const char* name =
        gnutls_alert_get_name(static_cast<gnutls_alert_description_t>(e.error_code - 0x100));
    if (name) s += std::string(": TLS alert ") + name;
  }
  return s;
}

// ---- packets out -------------------------------------------------------------

void Connection::write() {
  if (dead_ || ngtcp2_conn_is_in_closing_period(conn_.get()) ||
      ngtcp2_conn_is_in_draining_period(conn_.get()))
    return;
  uint64_t ts = to_ns(m_.host().now());
  DatagramIo& io = m_.io();
  size_t max_payload = ngtcp2_conn_get_max_tx_udp_payload_size(conn_.get());
  // As many packets as ngtcp2's send quantum (paced as a whole), at most one
  // GSO group. (Raising it to a full group measured no faster on a veth.)
  size_t quantum = ngtcp2_conn_get_send_quantum(conn_.get());
  size_t burst = std::clamp<size_t>(quantum / max_payload, 1, kMaxBurst);
  for (size_t pkts = 0; pkts < burst;) {
    if (!m_.make_room()) {
      m_.dirty(*this);  // the socket is full: again once it has room
      break;
    }
    // Round robin over the streams with something to send.
    while (!sendq_.empty() && !sendq_.front()->has_unsent()) {
      sendq_.front()->queued = false;
      sendq_.pop_front();
    }
    QuicStream* s = sendq_.empty() ? nullptr : sendq_.front();
    ngtcp2_vec v[3];
    size_t n = 0;
    bool fin = false;
    if (s) n = s->unsent(v, 3, &fin);
    uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE | (fin ? NGTCP2_WRITE_STREAM_FLAG_FIN : 0);
    ngtcp2_ssize taken = -1;
    ngtcp2_pkt_info pi{};
    auto* buf = reinterpret_cast<uint8_t*>(io.tx_buffer(0));
    ngtcp2_ssize nw = ngtcp2_conn_writev_stream(conn_.get(), nullptr, &pi, buf, max_payload,
                                                &taken, flags, s ? s->id() : -1, v, n, ts);
    if (s && taken >= 0) {
      size_t total = 0;
      for (size_t k = 0; k < n; k++) total += v[k].len;
      s->wrote(static_cast<size_t>(taken), fin && static_cast<size_t>(taken) == total);
      // Its turn is over: behind the others, if it has more.
      sendq_.pop_front();
      if (s->has_unsent()) sendq_.push_back(s);
      else s->queued = false;
    }
    if (nw == NGTCP2_ERR_WRITE_MORE) continue;  // the packet has room for more
    if (nw == NGTCP2_ERR_STREAM_DATA_BLOCKED || nw == NGTCP2_ERR_STREAM_SHUT_WR ||
        nw == NGTCP2_ERR_STREAM_NOT_FOUND) {
      // Out of its credit (extend_max_stream_data queues it again), or its
      // write side is shut. ngtcp2 0.12 tells of a STOP_SENDING received
      // only this way (its stream_stop_sending callback is about ours): the
      // peer stopped reading, a reset, told once the packet is done.
      if (s) {
        sendq_.pop_front();
        s->queued = false;
        if (nw != NGTCP2_ERR_STREAM_DATA_BLOCKED) stopped_.push_back(s);
      }
      continue;
    }
    if (nw < 0) {
      ngtcp2_connection_close_error_set_transport_error_liberr(&last_error_, static_cast<int>(nw),
                                                               nullptr, 0);
      return die(std::string("QUIC error: ") + ngtcp2_strerror(static_cast<int>(nw)), true);
    }
    if (nw == 0) break;  // congestion window, pacing, or nothing left
    io.commit(static_cast<size_t>(nw), peer_);
    pkts++;
  }
  ngtcp2_conn_update_pkt_tx_time(conn_.get(), ts);
  if (stopped_.empty()) return;
  auto stopped = std::move(stopped_);
  stopped_.clear();
  for (QuicStream* s : stopped)
    if (!s->retired()) s->on_reset("the peer stopped reading the connection");
}

Time Connection::silent_until() const {
  return members_.empty() ? kNever : last_rx_ + m_.settings().idle_timeout;
}

Time Connection::expiry() const {
  if (dead_) return kNever;
  return std::min(from_ns(ngtcp2_conn_get_expiry(conn_.get())), silent_until());
}

void Connection::on_expiry() {
  if (dead_) return;
  Time now = m_.host().now();
  int rv = now >= silent_until() ? NGTCP2_ERR_IDLE_CLOSE
                                 : ngtcp2_conn_handle_expiry(conn_.get(), to_ns(now));
  if (rv == NGTCP2_ERR_IDLE_CLOSE) {
    if (members_.empty()) m_.counters().conns_idle_closed++;
    if (!heard_) unreachable();  // not one packet came back: the path drops UDP
    return die("the QUIC connection to the peer timed out (no packet for " +
                   std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                      m_.settings().idle_timeout)
                                      .count()) +
                   " s)",
               false);
  }
  if (rv != 0) {
    ngtcp2_connection_close_error_set_transport_error_liberr(&last_error_, rv, nullptr, 0);
    return die(std::string("QUIC error: ") + ngtcp2_strerror(rv), true);
  }
  write();
}

// Every connection to this peer would fail the same way (a path that drops
// UDP; through a NAT, a certificate that cannot name the address the peer's
// packets come from): its host stays plain TCP for a while instead.
void Connection::unreachable() { m_.host().peer_unreachable(peer_, HK_MECH_QUIC); }

void Connection::die(std::string_view why, bool tell_peer) {
  if (dead_) return;
  if (tell_peer && !ngtcp2_conn_is_in_closing_period(conn_.get()) &&
      !ngtcp2_conn_is_in_draining_period(conn_.get()) && m_.make_room()) {
    ngtcp2_pkt_info pi{};
    ngtcp2_ssize nw = ngtcp2_conn_write_connection_close(
        conn_.get(), nullptr, &pi, reinterpret_cast<uint8_t*>(m_.io().tx_buffer(0)),
        DatagramIo::kMaxDatagram, &last_error_, to_ns(m_.host().now()));
    if (nw > 0) m_.io().commit(static_cast<size_t>(nw), peer_);
  }
  dead_ = true;
  if (!members_.empty() || !incoming_.empty())
    m_.host().log("quic: connection with " + to_string(peer_) + " ended: " + std::string(why),
                  log::Level::kWarn);
  for (const ngtcp2_cid& c : cids_) m_.remove_cid(c);
  cids_.clear();
  for (auto& [id, in] : incoming_) {
    in->on_connection_dead(why);
    m_.forget(*in);
  }
  incoming_.clear();
  // Every stream ends in a reset; each leaves members_ as it retires.
  auto streams = members_;
  for (QuicStream* s : streams) s->on_connection_dead(why);
  members_.clear();
  to_open_.clear();
  sendq_.clear();
  m_.on_dead(*this, why);
}

// ---- streams -------------------------------------------------------------------

// A stream joins: the first turns keep-alive on (an idle connection closes,
// a used one stays up).
void Connection::add_member(QuicStream& s) {
  members_.push_back(&s);
  if (members_.size() > 1) return;
  last_rx_ = std::max(last_rx_, m_.host().now());  // silence counts from now
  auto every = std::chrono::duration_cast<std::chrono::nanoseconds>(m_.settings().keep_alive);
  ngtcp2_conn_set_keep_alive_timeout(conn_.get(), static_cast<ngtcp2_duration>(every.count()));
}

void Connection::open_stream(QuicStream& s) {
  add_member(s);
  if (s.opener()) to_open_.push_back(&s);
  open_pending();
  m_.dirty(*this);
}

void Connection::open_pending() {
  if (!established()) return;
  size_t k = 0;
  for (; k < to_open_.size() && ngtcp2_conn_get_streams_bidi_left(conn_.get()) > 0; k++) {
    QuicStream* s = to_open_[k];
    int64_t id;
    if (ngtcp2_conn_open_bidi_stream(conn_.get(), &id, static_cast<StreamSink*>(s)) != 0) break;
    m_.counters().streams_opened++;
    s->bind(*this, id);
    want_send(*s);  // its header
    s->pull();
  }
  to_open_.erase(to_open_.begin(), to_open_.begin() + static_cast<ptrdiff_t>(k));
}

void Connection::want_send(QuicStream& s) {
  if (!s.queued) {
    s.queued = true;
    sendq_.push_back(&s);
  }
  m_.dirty(*this);
}

void Connection::adopt(Incoming& in, QuicStream& s) {
  auto it = incoming_.find(in.id);
  if (it == incoming_.end()) return;
  add_member(s);
  ngtcp2_conn_set_stream_user_data(conn_.get(), in.id, static_cast<StreamSink*>(&s));
  m_.counters().streams_accepted++;
  auto keep = std::move(it->second);  // `in` lives until adopt() returned
  incoming_.erase(it);
  s.adopt(in);
  m_.dirty(*this);
}

void Connection::drop_incoming(int64_t id, uint64_t code) {
  if (dead_) return;
  ngtcp2_conn_shutdown_stream(conn_.get(), id, code);
  ngtcp2_conn_set_stream_user_data(conn_.get(), id, nullptr);
  auto it = incoming_.find(id);
  if (it != incoming_.end()) {
    m_.forget(*it->second);
    dropped_.push_back(std::move(it->second));  // may be inside its own call
    incoming_.erase(it);
  }
  m_.dirty(*this);
}

void Connection::remove(QuicStream& s) {
  auto drop = [&](auto& v) { v.erase(std::remove(v.begin(), v.end(), &s), v.end()); };
  drop(members_);
  drop(to_open_);
  if (s.queued) {
    drop(sendq_);
    s.queued = false;
  }
  if (members_.empty() && !dead_) ngtcp2_conn_set_keep_alive_timeout(conn_.get(), 0);
}

void Connection::status(nlohmann::json& out) const {
  ngtcp2_conn_stat st;
  ngtcp2_conn_get_conn_stat(conn_.get(), &st);
  out = {{"peer", to_string(peer_)},
         {"role", server_ ? "server" : "client"},
         {"established", established()},
         {"cc", cc_name(cc_)},
         {"streams", members_.size()},
         {"smoothed_rtt_us", st.smoothed_rtt / 1000},
         {"cwnd", st.cwnd},
         {"bytes_in_flight", st.bytes_in_flight}};
}

}  // namespace hooker::quic
