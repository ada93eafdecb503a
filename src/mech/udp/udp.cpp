// The `udp` mechanism's shared part: the datagram I/O, demultiplexing by
// token, datagrams that beat their handshake, and what waited for room.
#include "mech/udp/udp.h"

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

#include "core/policy.h"
#include "mech/udp/socket.h"  // udp_open

namespace hooker {

static bool same_host(const sockaddr_in6& a, const sockaddr_in6& b) {
  return std::memcmp(&a.sin6_addr, &b.sin6_addr, sizeof(a.sin6_addr)) == 0;
}

static bool same_address(const sockaddr_in6& a, const sockaddr_in6& b) {
  return a.sin6_port == b.sin6_port && same_host(a, b);
}

UdpMechanism::UdpMechanism(MechHost& host, std::unique_ptr<DatagramIo> io, uint8_t id,
                           Clock::duration keepalive)
    : host_(host), io_(std::move(io)), id_(id), keepalive_(keepalive) {}

std::vector<int> UdpMechanism::fds() const {
  if (io_->fd() < 0) return {};
  return {io_->fd()};
}

std::unique_ptr<MechConn> UdpMechanism::open(const PeerInfo& peer, AppPort& port) {
  auto c = std::make_unique<UdpConn>(*this, peer, port);
  conns_[peer.token] = c.get();
  return c;
}

void UdpMechanism::forget(UdpConn& c) {
  conns_.erase(c.peer().token);
  retired_some_ = true;
}

// The end of a loop turn: the lists forget the retired before they go.
void UdpMechanism::reap() {
  if (!retired_some_) return;
  retired_some_ = false;
  for (auto& l : lists_) l.purge();
}

uint16_t UdpMechanism::coverage(const PeerInfo& peer) const {
  if (id_ != HK_MECH_UDPLITE) return 0;
  uint16_t cov = udplite_coverage(peer.opts).value_or(kLiteMinCoverage);
  return cov == kLiteMinCoverage ? 0 : cov;
}

uint32_t UdpMechanism::window() const {
  // Every connection may fill its window at once; together they must fit
  // in the receive buffer, or the kernel drops datagrams.
  uint64_t n = std::max<size_t>(1, conns_.size());
  return static_cast<uint32_t>(std::clamp<uint64_t>(kRxBudget / n, kInitialWindow, kMaxWindow));
}

// ---- sending ---------------------------------------------------------------

void UdpMechanism::flush_io() {
  auto r = io_->flush();
  if (!r) {
    host_.log(r.error().message(), log::Level::kError);
    if (!io_->shrunk.empty()) shrink_paths();
    return;
  }
  if (!io_->shrunk.empty()) shrink_paths();
  if (!*r == tx_blocked_) return;  // *r: everything left
  // Blocked: wait for room; unblocked: stop asking for it.
  tx_blocked_ = !*r;
  if (io_->fd() >= 0) host_.want_writable(io_->fd(), tx_blocked_);
}

// The path to some peers shrank under datagrams already sized: each of
// their connections sizes its next ones by the path as the kernel knows it
// now (a route's MTU, or what an ICMP message lowered it to).
void UdpMechanism::shrink_paths() {
  auto peers = std::move(io_->shrunk);
  io_->shrunk.clear();
  for (const sockaddr_in6& p : peers) {
    uint32_t mtu = path_mtu(p);
    if (mtu == 0) continue;
    for (auto& [tok, c] : conns_)
      if (same_host(c->peer().peer, p)) c->path_shrank(mtu);
  }
}

bool UdpMechanism::make_room() {
  if (io_->room() == 0) flush_io();
  return io_->room() > 0;
}

void UdpMechanism::queue(const wire::Frame& f, const sockaddr_in6& to) {
  std::byte* b = io_->tx_buffer(0);
  wire::encode_header(f, b);
  if (!f.payload.empty()) std::memcpy(b + wire::kHeader, f.payload.data(), f.payload.size());
  io_->commit(wire::kHeader + f.payload.size(), to);
}

void UdpMechanism::send_reset(uint64_t peer_token, const sockaddr_in6& to) {
  if (!make_room()) {
    resets_owed_.push_back({peer_token, to});  // sent once the queue drains
    return;
  }
  queue({HK_WIRE_RESET, id_, peer_token, 0, 0, {}}, to);
  cnt_.resets_sent++;
}

void UdpMechanism::flush() {
  flush_io();
  // RESETs and ACKs owed first: they end or unblock the peers' senders.
  if (!tx_blocked_ && !resets_owed_.empty()) {
    auto owed = std::move(resets_owed_);
    resets_owed_.clear();
    for (auto& [tok, to] : owed) send_reset(tok, to);
  }
  if (!tx_blocked_ && !lists_[kWaitAckRoom].empty()) {
    lists_[kWaitAckRoom].drain([](UdpConn& c) {
      if (c.ack_pending()) c.ack();
    });
    flush_io();
  }
  // Connections that waited for room in the send queue.
  auto& tx_waiters = lists_[kWaitUdpRoom];
  while (!tx_blocked_ && !tx_waiters.empty()) {
    size_t waited = tx_waiters.size();
    tx_waiters.drain([](UdpConn& c) { c.pump(); });
    flush_io();
    if (tx_waiters.size() >= waited) break;
  }
}

// ---- receiving -------------------------------------------------------------

void UdpMechanism::on_readable(int) {
  receive_all(*io_, host_,
              [this](const sockaddr_in6& from, std::span<const std::byte> d) { on_datagram(from, d); });
  end_batch();
}

void UdpMechanism::end_batch() {
  // One hand-over per connection per batch into its application, then an
  // acknowledgement, so a sender waiting for credit never waits on a
  // threshold.
  lists_[kWaitBatchEnd].drain([](UdpConn& c) {
    c.deliver();
    if (c.ack_due(1)) c.ack();  // ack() passes over a connection deliver() retired
  });
}


void UdpMechanism::on_datagram(const sockaddr_in6& from, std::span<const std::byte> d) {
  auto p = wire::parse(d);
  if (!p.frame) {
    cnt_.rx_malformed++;
    return;
  }
  const wire::Frame& f = *p.frame;
  if (f.token == HK_WIRE_PROBE_TOKEN && f.type == HK_WIRE_ACK && (f.flags & HK_WIRE_F_HELLO))
    return on_path_probe(from, f);
  // Each mechanism has sockets of its own: another's frame here is an error.
  if (f.mech != id_) {
    cnt_.rx_wrong_mech++;
    return;
  }
  auto it = conns_.find(f.token);
  if (it == conns_.end()) {
    bool pending = host_.expect_token(f.token);  // may bind it meanwhile
    it = conns_.find(f.token);
    if (it == conns_.end()) {
      // Accepted in a SYN-ACK whose final ACK has not arrived yet, or just
      // established on another CPU, its event not yet read: keep the
      // datagram until the connection is bound (a lost one would reset it).
      if (pending && stash_bytes_ + d.size() <= kStashLimit) {
        stash_[f.token].push_back({from, {d.begin(), d.end()}});
        stash_bytes_ += d.size();
        cnt_.rx_stashed++;
      } else {
        cnt_.rx_unknown_token++;
      }
      return;
    }
  }
  UdpConn& c = *it->second;
  // The token, which only the two ends of the TCP connection saw, vouches
  // for the datagram: its source is where the peer's hookerd is now. A NAT
  // in front of the connecting side rewrites the address and port the TCP
  // option named; a host may answer from another of its addresses.
  if (!same_address(from, c.peer().peer)) {
    cnt_.peer_moved++;
    c.peer_at(from);
  } else if (!c.heard()) {
    heard_at_[path_key(from)] = host_.now();  // once a connection: see path_open
  }
  c.on_frame(f);
}

UdpMechanism::PathKey UdpMechanism::path_key(const sockaddr_in6& a) {
  PathKey k;
  std::memcpy(k.data(), &a.sin6_addr, sizeof(a.sin6_addr));
  std::memcpy(k.data() + sizeof(a.sin6_addr), &a.sin6_port, sizeof(a.sin6_port));
  return k;
}

bool UdpMechanism::path_open(const sockaddr_in6& peer) const {
  auto it = heard_at_.find(path_key(peer));
  return it != heard_at_.end() && host_.now() - it->second < kPathFresh;
}

bool UdpMechanism::probe_path(const sockaddr_in6& to) {
  if (!make_room()) return false;
  queue({HK_WIRE_ACK, id_, HK_WIRE_PROBE_TOKEN, 0, 0, {}, HK_WIRE_F_HELLO}, to);
  flush_io();
  return true;
}

// A peer's hookerd asks whether UDP from it reaches us (it remembers us as
// unreachable), or answers our own question.
void UdpMechanism::on_path_probe(const sockaddr_in6& from, const wire::Frame& f) {
  if (f.flags & HK_WIRE_F_REPLY) return host_.path_answered(from);
  // Same size as the question, to its source: no amplification; at most
  // kProbeAnswers a second, so a flood of spoofed probes reflects little.
  Time now = host_.now();
  if (now - probe_second_ >= std::chrono::seconds(1)) {
    probe_second_ = now;
    probe_answers_ = 0;
  }
  if (probe_answers_ >= kProbeAnswers || !make_room()) {
    cnt_.path_probes_refused++;
    return;
  }
  probe_answers_++;
  cnt_.path_probes_replied++;
  queue({HK_WIRE_ACK, id_, HK_WIRE_PROBE_TOKEN, 0, 0, {},
         static_cast<uint8_t>(HK_WIRE_F_HELLO | HK_WIRE_F_REPLY)},
        from);
}

void UdpMechanism::replay_early(UdpConn& c) {
  auto it = stash_.find(c.peer().token);
  if (it == stash_.end()) return;
  auto early = std::move(it->second);
  stash_.erase(it);
  for (auto& e : early) {
    stash_bytes_ -= e.d.size();
    on_datagram(e.from, e.d);
  }
  // They were the batch: every byte and the END may have come early, and
  // no later datagram would end another.
  end_batch();
}

void UdpMechanism::housekeeping() {
  Time now = host_.now();
  std::erase_if(heard_at_, [now](const auto& e) { return now - e.second >= kPathFresh; });
  // Early datagrams of a handshake that is gone: nobody will claim them.
  std::vector<uint64_t> gone;
  for (auto& [tok, v] : stash_)
    if (!host_.expect_token(tok)) gone.push_back(tok);
  for (uint64_t tok : gone) {
    auto it = stash_.find(tok);
    if (it == stash_.end()) continue;  // claimed meanwhile
    for (auto& e : it->second) stash_bytes_ -= e.d.size();
    stash_.erase(it);
  }
}

void UdpMechanism::status(nlohmann::json& out) const {
  out["counters"] = {
      {"rx_malformed", cnt_.rx_malformed},
      {"rx_unknown_token", cnt_.rx_unknown_token},
      {"rx_wrong_source", cnt_.rx_wrong_source},
      {"rx_wrong_mech", cnt_.rx_wrong_mech},
      {"rx_duplicate", cnt_.rx_duplicate},
      {"rx_out_of_order", cnt_.rx_out_of_order},
      {"rx_beyond_window", cnt_.rx_beyond_window},
      {"rx_stashed", cnt_.rx_stashed},
      {"resets_sent", cnt_.resets_sent},
      {"resets_received", cnt_.resets_received},
      {"resets_lost_datagram", cnt_.resets_lost_datagram},
      {"resets_peer_silent", cnt_.resets_peer_silent},
      {"resets_local_failure", cnt_.resets_local_failure},
      {"resets_app_gone", cnt_.resets_app_gone},
      {"resets_peer_unreachable", cnt_.resets_peer_unreachable},
      {"peer_moved", cnt_.peer_moved},
      {"keepalives_sent", cnt_.keepalives_sent},
      {"path_probes_replied", cnt_.path_probes_replied},
      {"path_probes_refused", cnt_.path_probes_refused},
  };
  add_io_counters(out["counters"], *io_);
  // Datagrams queued for the socket; blocked: it is full and the
  // mechanism waits for room.
  out["queue"] = {{"datagrams", io_->queued()},
                  {"room", io_->room()},
                  {"blocked", tx_blocked_},
                  {"connections", conns_.size()}};
}

// ---- the registry's entry --------------------------------------------------

Result<std::unique_ptr<Mechanism>> udp_over(MechHost& host, std::unique_ptr<DatagramIo> io,
                                             const MechConfig& cfg) {
  return std::unique_ptr<Mechanism>(
      std::make_unique<UdpMechanism>(host, std::move(io), HK_MECH_UDP, cfg.keepalive));
}

Result<std::unique_ptr<Mechanism>> udp_open(MechHost& host, const MechConfig& cfg) {
  auto s = UdpSocket::open(cfg.port);
  if (!s) return s.error();
  return udp_over(host, s.take(), cfg);
}

}  // namespace hooker
