// The `quic` mechanism's shared part: demultiplexing packets by connection
// ID, one connection per peer hookerd, matching accepted streams to the
// connections hookerd binds, refusals.
#include "mech/quic/quic.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "core/abi.h"
#include "core/flow.h"
#include "core/log.h"
#include "core/policy.h"
#include "mech/udp/socket.h"

namespace hooker::quic {

QuicMechanism::QuicMechanism(MechHost& host, std::unique_ptr<DatagramIo> io, Credentials cred,
                             QuicSettings settings)
    : host_(host), io_(std::move(io)), cred_(std::move(cred)), settings_(settings) {}

QuicMechanism::~QuicMechanism() {
  // Connections first (they tell their peers and streams), then the rest.
  while (!conns_.empty()) conns_.back()->die("hookerd closed the mechanism", true);
  flush_io();
}

std::vector<int> QuicMechanism::fds() const {
  if (io_->fd() < 0) return {};
  return {io_->fd()};
}

std::vector<std::string> QuicMechanism::loaded() const {
  return {io_->describe() + ", QUIC (ngtcp2 " + NGTCP2_VERSION + ", GnuTLS " +
          gnutls_check_version(nullptr) + ")"};
}

// ---- connections ---------------------------------------------------------------

void QuicMechanism::add_cid(const ngtcp2_cid& cid, Connection& c) { by_cid_[CidKey(cid)] = &c; }
void QuicMechanism::remove_cid(const ngtcp2_cid& cid) { by_cid_.erase(CidKey(cid)); }

void QuicMechanism::dirty(Connection& c) {
  if (c.dirty || c.dead()) return;
  c.dirty = true;
  dirty_.push_back(&c);
}

void QuicMechanism::on_dead(Connection& c, std::string_view why) {
  auto& list = by_peer_[PeerKey(c.peer())];
  list.erase(std::remove(list.begin(), list.end(), &c), list.end());
  bool last = list.empty();
  if (last) by_peer_.erase(PeerKey(c.peer()));
  auto it = std::find_if(conns_.begin(), conns_.end(), [&](auto& p) { return p.get() == &c; });
  if (it != conns_.end()) {
    dead_.push_back(std::move(*it));
    conns_.erase(it);
  }
  if (!last) return;
  // Streams waiting for this peer's stream wait in vain: its connection
  // failed (a refused certificate, say), and no other is left.
  std::vector<QuicStream*> orphans;
  for (auto& [token, s] : awaiting_)
    if (PeerKey(quic_addr(s->peer().peer)) == PeerKey(c.peer())) orphans.push_back(s);
  for (QuicStream* s : orphans) s->on_connection_dead(why);
}

ngtcp2_cc_algo QuicMechanism::cc_for(const std::string& opts) const {
  auto name = quic_cc(opts);  // checked by the policy
  if (name && *name == "cubic") return NGTCP2_CC_ALGO_CUBIC;
  if (name && *name == "bbr") return NGTCP2_CC_ALGO_BBR;
  return settings_.cc;
}

// The connection new streams to `peer` under congestion control `cc` use:
// an established one (of two, after simultaneous opens, the one both ends
// pick), else one in its handshake, else a new one.
Connection* QuicMechanism::connection_to(const sockaddr_in6& peer, ngtcp2_cc_algo cc,
                                         std::string* why) {
  Connection* best = nullptr;
  auto it = by_peer_.find(PeerKey(peer));
  if (it != by_peer_.end()) {
    for (Connection* c : it->second) {
      if (c->dead() || c->cc() != cc) continue;
      if (!best || (c->established() && !best->established())) {
        best = c;
        continue;
      }
      if (c->established() != best->established()) continue;
      ngtcp2_cid a = c->initial_dcid(), b = best->initial_dcid();
      if (std::lexicographical_compare(a.data, a.data + a.datalen, b.data, b.data + b.datalen))
        best = c;
    }
  }
  if (best) return best;
  auto c = Connection::connect(*this, peer, cc);
  if (!c) {
    *why = c.error().message();
    return nullptr;
  }
  cnt_.conns_opened++;
  Connection* p = c->get();
  conns_.push_back(c.take());
  by_peer_[PeerKey(peer)].push_back(p);
  dirty(*p);
  return p;
}

void QuicMechanism::prepare(const sockaddr_in6& peer, const std::string& opts) {
  sockaddr_in6 to = quic_addr(peer);
  ngtcp2_cc_algo cc = cc_for(opts);
  if (auto it = by_peer_.find(PeerKey(to)); it != by_peer_.end())
    for (Connection* c : it->second)
      if (!c->dead() && c->cc() == cc) return;  // up, or in its handshake already
  std::string why;
  if (!connection_to(to, cc, &why)) return host_.log("quic: " + why, log::Level::kWarn);
  cnt_.conns_early++;
}

// ---- streams -------------------------------------------------------------------

sockaddr_in6 QuicMechanism::quic_addr(const sockaddr_in6& peer) const {
  sockaddr_in6 a = peer;
  a.sin6_port = htons(static_cast<uint16_t>(ntohs(peer.sin6_port) + settings_.peer_port_offset));
  return a;
}

std::unique_ptr<MechConn> QuicMechanism::open(const PeerInfo& peer, AppPort& port) {
  bool opener = opens(peer);
  auto s = std::make_unique<QuicStream>(*this, peer, port, opener);
  if (opener) {
    std::string why;
    Connection* c = connection_to(quic_addr(peer.peer), cc_for(peer.opts), &why);
    if (!c) s->on_connection_dead(why);  // start() resets it, saying why
    else c->open_stream(*s);
    return s;
  }
  auto it = pending_.find(peer.token);
  if (it == pending_.end()) {
    awaiting_[peer.token] = s.get();  // match() binds it when the peer's stream comes
    return s;
  }
  Incoming* in = it->second;
  pending_.erase(it);
  if (in->header->from_token != peer.peer_token) {
    turn_away(*in, "it names another connection");
    s->on_connection_dead("the peer's stream names another connection");
    return s;
  }
  in->conn->adopt(*in, *s);
  return s;
}

void QuicMechanism::match(Incoming& in) {
  const StreamHeader& h = *in.header;
  uint64_t token = h.to_token;
  if ((h.flags & StreamHeader::kRefused) || refused_.count(token)) {
    // The peer refused it, or we did: neither side carries it.
    cnt_.streams_refused++;
    refused_[token] = host_.now();
    auto it = awaiting_.find(token);
    Connection* c = in.conn;
    c->drop_incoming(in.id, kErrRefused);
    if (it != awaiting_.end()) it->second->on_reset("the peer refused the connection");
    return;
  }
  // Already waiting for open(): asking the host again could bind it, and
  // open() would adopt (and free) `in` inside this call.
  if (auto p = pending_.find(token); p != pending_.end() && p->second == &in) return;
  auto it = awaiting_.find(token);
  if (it == awaiting_.end()) {
    bool expected = host_.expect_token(token);  // may bind it meanwhile
    it = awaiting_.find(token);
    if (it == awaiting_.end()) {
      if (expected) {
        pending_[token] = &in;  // open() takes it
        return;
      }
      return turn_away(in, "no connection here has its token");
    }
  }
  QuicStream* s = it->second;
  awaiting_.erase(it);
  if (h.from_token != s->peer().peer_token) {
    turn_away(in, "it names another connection");
    return s->on_reset("the peer's stream names another connection");
  }
  in.conn->adopt(in, *s);
}

void QuicMechanism::forget(Incoming& in) {
  if (in.header) {
    auto it = pending_.find(in.header->to_token);
    if (it != pending_.end() && it->second == &in) pending_.erase(it);
  }
}

void QuicMechanism::turn_away(Incoming& in, std::string_view why) {
  cnt_.streams_unknown_token++;
  if (!in.conn) return;  // its connection died: nothing to reset
  std::string line = "quic: reset a stream from " + to_string(in.conn->peer()) + ": " +
                     std::string(why);
  if (in.header) line += " (token " + std::to_string(in.header->to_token) + ")";
  log::conn(line);
  in.conn->drop_incoming(in.id, kErrUnknownToken);
}

void QuicMechanism::forget(QuicStream& s) {
  auto it = awaiting_.find(s.peer().token);
  if (it != awaiting_.end() && it->second == &s) awaiting_.erase(it);
}

// The application side of a stream that only says "refused": nothing to
// read, its end at once.
struct QuicMechanism::Refusal final : AppPort {
  std::unique_ptr<QuicStream> s;
  bool done = false;
  ssize_t read(const iovec*, size_t) override { return 0; }
  std::optional<uint64_t> final_length() const override { return 0; }
  ssize_t deliver(std::span<const std::byte>) override { return -1; }
  void peer_finished() override {}
  void sent_all() override { done = true; }
  void abort(std::string_view) override { done = true; }
  void wake_at(Time) override {}
};

void QuicMechanism::refuse(const PeerInfo& peer) {
  cnt_.streams_refused++;
  if (!opens(peer)) {
    // The peer opens the stream: it is dropped when it comes.
    refused_[peer.token] = host_.now();
    auto it = pending_.find(peer.token);
    if (it != pending_.end()) {
      Incoming* in = it->second;
      pending_.erase(it);
      in->conn->drop_incoming(in->id, kErrRefused);
    }
    return;
  }
  // We open it: a stream whose header says so, and nothing else.
  std::string why;
  Connection* c = connection_to(quic_addr(peer.peer), cc_for(peer.opts), &why);
  if (!c) return host_.log("quic: cannot tell " + why, log::Level::kWarn);
  auto r = std::make_unique<Refusal>();
  r->s = std::make_unique<QuicStream>(*this, peer, *r, true);
  r->s->mark_refusal();
  c->open_stream(*r->s);
  r->s->start();
  refusals_.push_back(std::move(r));
}

// ---- packets -------------------------------------------------------------------

void QuicMechanism::on_readable(int) {
  receive_all(*io_, host_,
              [this](const sockaddr_in6& from, std::span<const std::byte> d) { on_datagram(from, d); });
  for (size_t i = 0; i < deliver_.size(); i++) {  // deliver() may add none, but be safe
    QuicStream* s = deliver_[i];
    s->deliver_queued = false;
    if (!s->retired()) s->deliver();
  }
  deliver_.clear();
  write_dirty();  // ACKs, credit, and what the packets let go
  flush_io();
}

void QuicMechanism::on_datagram(const sockaddr_in6& from, std::span<const std::byte> d) {
  auto* p = reinterpret_cast<const uint8_t*>(d.data());
  ngtcp2_version_cid vc;
  if (ngtcp2_pkt_decode_version_cid(&vc, p, d.size(), kCidLen) != 0) {
    cnt_.rx_malformed++;
    return;
  }
  auto it = by_cid_.find(CidKey(vc.dcid, vc.dcidlen));
  if (it != by_cid_.end()) return it->second->read(from, d);
  // A new connection starts with a client's Initial.
  ngtcp2_pkt_hd hd;
  if (!(p[0] & 0x80) || ngtcp2_accept(&hd, p, d.size()) != 0) {
    cnt_.rx_unknown_cid++;
    return;
  }
  auto c = Connection::accept(*this, from, hd);
  if (!c) {
    cnt_.conns_failed++;
    return host_.log("quic: " + c.error().message(), log::Level::kWarn);
  }
  cnt_.conns_accepted++;
  Connection* cp = c->get();
  conns_.push_back(c.take());
  by_peer_[PeerKey(from)].push_back(cp);
  cp->read(from, d);
}

bool QuicMechanism::make_room() {
  if (io_->room() == 0) flush_io();
  return io_->room() > 0;
}

void QuicMechanism::flush_io() {
  if (io_->queued() == 0 && !tx_blocked_) return;
  auto r = io_->flush();
  if (!r) {
    host_.log(r.error().message(), log::Level::kError);
    return;
  }
  if (*r != tx_blocked_) return;  // *r: everything left
  tx_blocked_ = !*r;
  if (io_->fd() >= 0) host_.want_writable(io_->fd(), tx_blocked_);
}

void QuicMechanism::write_dirty() {
  // A write may make others dirty (or this one again, the socket full).
  writing_.swap(dirty_);
  for (Connection* c : writing_) {
    c->dirty = false;
    if (!c->dead()) c->write();
  }
  writing_.clear();
}

void QuicMechanism::flush() {
  flush_io();
  if (tx_blocked_) return;
  write_dirty();
  flush_io();
}

void QuicMechanism::reap() {
  for (auto& c : conns_) c->reap();
  // Connections that died this turn: nothing holds them now.
  if (!dead_.empty()) {
    dirty_.erase(std::remove_if(dirty_.begin(), dirty_.end(), [](Connection* c) { return c->dead(); }),
                 dirty_.end());
    dead_.clear();
  }
  std::erase_if(refusals_, [](auto& r) { return r->done; });
}

void QuicMechanism::housekeeping() {
  Time now = host_.now();
  // A refusal matters while the other side's stream may still come.
  std::erase_if(refused_, [&](auto& kv) { return now - kv.second > 2 * settings_.idle_timeout; });
  // A peer's stream waits for a connection hookerd binds; one whose
  // handshake is gone (no bind will come) is dropped, its bytes with it.
  // (By token: asking the host may bind, and free, any of them.)
  std::vector<uint64_t> tokens;
  for (auto& [token, in] : pending_) tokens.push_back(token);
  std::vector<uint64_t> gone;
  for (uint64_t t : tokens)
    if (!host_.expect_token(t)) gone.push_back(t);
  for (uint64_t t : gone) {
    auto it = pending_.find(t);
    if (it == pending_.end()) continue;  // bound meanwhile
    turn_away(*it->second, "its connection's handshake is gone");  // forgets it
  }
}

// A few QUIC connections (one per peer hookerd): a scan is cheaper than a heap.
Time QuicMechanism::deadline() const {
  Time t = kNever;
  for (auto& c : conns_) t = std::min(t, c->expiry());
  return t;
}

void QuicMechanism::on_deadline(Time now) {
  due_.clear();
  for (auto& c : conns_)
    if (c->expiry() <= now) due_.push_back(c.get());
  for (Connection* c : due_)
    if (!c->dead()) c->on_expiry();  // may kill others? only itself
  flush_io();
}

void QuicMechanism::status(nlohmann::json& out) const {
  out["counters"] = {
      {"rx_malformed", cnt_.rx_malformed},
      {"rx_unknown_cid", cnt_.rx_unknown_cid},
      {"conns_opened", cnt_.conns_opened},
      {"conns_early", cnt_.conns_early},
      {"conns_accepted", cnt_.conns_accepted},
      {"conns_idle_closed", cnt_.conns_idle_closed},
      {"conns_failed", cnt_.conns_failed},
      {"handshakes_failed", cnt_.handshakes_failed},
      {"streams_opened", cnt_.streams_opened},
      {"streams_accepted", cnt_.streams_accepted},
      {"streams_unknown_token", cnt_.streams_unknown_token},
      {"streams_refused", cnt_.streams_refused},
      {"streams_reset", cnt_.streams_reset},
  };
  add_io_counters(out["counters"], *io_);
  nlohmann::json conns = nlohmann::json::array();
  for (auto& c : conns_) {
    nlohmann::json j;
    c->status(j);
    conns.push_back(j);
  }
  out["connections"] = conns;
  out["queue"] = {{"datagrams", io_->queued()}, {"room", io_->room()}, {"blocked", tx_blocked_}};
}

}  // namespace hooker::quic

// ---- the registry's entries ----------------------------------------------------

namespace hooker {

namespace {
// hookerd's `quic` socket is on --port + 1 (the `udp` socket has --port):
// the peer's, named by the TCP option, likewise.
constexpr uint16_t kPortOffset = 1;

Result<std::unique_ptr<Mechanism>> make(MechHost& host, std::unique_ptr<DatagramIo> io,
                                        const MechConfig& cfg, uint16_t port_offset) {
  if (cfg.quic_cert.empty() || cfg.quic_key.empty() || cfg.quic_ca.empty())
    return Error{"quic needs a certificate, its key and the CA: --quic-cert FILE --quic-key FILE "
                 "--quic-ca FILE",
                 0};
  auto cred = quic::load_credentials(cfg.quic_cert, cfg.quic_key, cfg.quic_ca);
  if (!cred) return cred.error();
  quic::QuicSettings s;
  if (cfg.quic_cc == "bbr" || cfg.quic_cc.empty()) s.cc = NGTCP2_CC_ALGO_BBR;
  else if (cfg.quic_cc == "cubic") s.cc = NGTCP2_CC_ALGO_CUBIC;
  else return Error{"quic congestion control " + cfg.quic_cc + " unknown: cubic or bbr", 0};
  s.peer_port_offset = port_offset;
  // A NAT's UDP mapping must outlive an idle connection streams still use:
  // --keepalive shortens the keep-alive, never lengthens it (it also
  // bounds how late a dead peer is noticed).
  if (cfg.keepalive > Clock::duration::zero()) s.keep_alive = std::min(s.keep_alive, cfg.keepalive);
  return std::unique_ptr<Mechanism>(
      std::make_unique<quic::QuicMechanism>(host, std::move(io), cred.take(), s));
}

}  // namespace

Result<std::unique_ptr<Mechanism>> quic_over(MechHost& host, std::unique_ptr<DatagramIo> io,
                                             const MechConfig& cfg) {
  return make(host, std::move(io), cfg, 0);
}

Result<std::unique_ptr<Mechanism>> quic_open(MechHost& host, const MechConfig& cfg) {
  // Checked before the socket is opened: one line says what is missing.
  if (cfg.quic_cert.empty() || cfg.quic_key.empty() || cfg.quic_ca.empty())
    return make(host, nullptr, cfg, kPortOffset);
  auto s = UdpSocket::open(static_cast<uint16_t>(cfg.port + kPortOffset));
  if (!s) return s.error();
  return make(host, s.take(), cfg, kPortOffset);
}

}  // namespace hooker
