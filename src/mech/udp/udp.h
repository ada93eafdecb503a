// The `udp` mechanism: every connection's datagrams through one datagram
// I/O (a UDP socket in hookerd, an in-memory link in the conformance
// suite), demultiplexed by the receiver's token. It does not retransmit.
// `udplite` is the same over a UDP-Lite socket (src/mech/udplite): one
// class, told which mechanism id its frames carry.
#pragma once

#include <array>
#include <map>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/wait_list.h"
#include "core/wire.h"
#include "mech/mechanism.h"
#include "mech/udp/conn.h"

namespace hooker {

// Every reason a datagram is not delivered, and every reset, has one.
struct UdpCounters {
  uint64_t rx_malformed = 0, rx_unknown_token = 0, rx_wrong_source = 0, rx_wrong_mech = 0;
  uint64_t rx_duplicate = 0, rx_out_of_order = 0, rx_beyond_window = 0, rx_stashed = 0;
  uint64_t resets_sent = 0, resets_received = 0, resets_app_gone = 0;
  uint64_t resets_lost_datagram = 0, resets_peer_silent = 0, resets_local_failure = 0;
  uint64_t resets_peer_unreachable = 0;  // its opening datagrams never answered
  uint64_t peer_moved = 0;  // a peer's datagrams came from a new address (NAT)
  uint64_t keepalives_sent = 0;
  uint64_t path_probes_replied = 0, path_probes_refused = 0;  // peers' probes: answered; over the budget
};

class UdpMechanism final : public Mechanism {
 public:
  static constexpr size_t kGsoMax = 44;          // datagrams read from the app at once
  static constexpr uint32_t kMaxWindow = 4 << 20;     // credit one connection may get
  static constexpr uint64_t kRxBudget = 24ull << 20;  // payload the receive buffer holds
  static constexpr size_t kStashLimit = 1 << 20;      // early datagrams, all tokens
  static constexpr uint32_t kProbeAnswers = 100;       // path probes answered a second
  // How long a peer heard at the address its TCP option named stays one the
  // accepting side may speak to first: well within the 30 s a NAT (Linux
  // conntrack's unreplied UDP flow) keeps a mapping that saw no traffic.
  static constexpr auto kPathFresh = std::chrono::seconds(20);

  // `id`: the enum hk_mech its frames carry, and the only one it accepts.
  UdpMechanism(MechHost& host, std::unique_ptr<DatagramIo> io, uint8_t id,
               Clock::duration keepalive = std::chrono::seconds(25));

  std::vector<int> fds() const override;
  void on_readable(int fd) override;
  void on_writable(int) override { flush(); }
  void flush() override;
  void reap() override;
  void housekeeping() override;
  std::unique_ptr<MechConn> open(const PeerInfo& peer, AppPort& port) override;
  bool probe_path(const sockaddr_in6& to) override;
  void refuse(const PeerInfo& peer) override { send_reset(peer.peer_token, peer.peer); }
  void status(nlohmann::json& out) const override;
  std::vector<std::string> loaded() const override { return {io_->describe()}; }

  // For its connections.
  uint8_t id() const { return id_; }
  Clock::duration keepalive() const { return keepalive_; }
  MechHost& host() { return host_; }
  DatagramIo& io() { return *io_; }
  UdpCounters& counters() { return cnt_; }
  // Room in the send queue, flushing it first if it is full.
  bool make_room();
  void queue(const wire::Frame& f, const sockaddr_in6& to);
  void send_reset(uint64_t peer_token, const sockaddr_in6& to);
  uint32_t window() const;
  // The UDP-Lite checksum coverage of a connection's DATA datagrams, from
  // its rule's options (udplite:cov=N); 0 for the socket's own (the
  // headers only), and always for udp.
  uint16_t coverage(const PeerInfo& peer) const;
  void wait(UdpConn& c, UdpWait why) { lists_[why].add(c); }
  void replay_early(UdpConn& c);
  void end_batch();  // what a batch of datagrams left for the applications
  void forget(UdpConn& c);
  // A connection of this peer hookerd was heard from that very address
  // (no NAT in between rewrote it) within kPathFresh: datagrams sent there
  // now arrive, so the accepting side need not wait for a HELLO.
  bool path_open(const sockaddr_in6& peer) const;

 private:
  void on_datagram(const sockaddr_in6& from, std::span<const std::byte> d);
  void on_path_probe(const sockaddr_in6& from, const wire::Frame& f);
  void flush_io();
  void shrink_paths();

  MechHost& host_;
  std::unique_ptr<DatagramIo> io_;
  uint8_t id_;
  Clock::duration keepalive_;
  bool tx_blocked_ = false;  // the socket was full: waiting for room
  std::unordered_map<uint64_t, UdpConn*> conns_;  // by our token
  bool retired_some_ = false;  // reap has lists to purge
  std::array<WaitList<UdpConn, UdpWait>, kUdpWaitKinds> lists_{
      WaitList<UdpConn, UdpWait>(kWaitUdpRoom), WaitList<UdpConn, UdpWait>(kWaitAckRoom),
      WaitList<UdpConn, UdpWait>(kWaitBatchEnd)};
  std::vector<std::pair<uint64_t, sockaddr_in6>> resets_owed_;  // the queue was full
  struct Stashed { sockaddr_in6 from; std::vector<std::byte> d; };
  std::unordered_map<uint64_t, std::vector<Stashed>> stash_;  // early datagrams
  size_t stash_bytes_ = 0;
  // Path probes answered in this second, and which second: anyone can send
  // one (it names no connection), so the answers are rationed.
  uint32_t probe_answers_ = 0;
  Time probe_second_{};
  // See path_open: each peer address a connection first heard its peer
  // at, as its option named it, and when. Forgotten in housekeeping.
  using PathKey = std::array<uint8_t, sizeof(in6_addr) + sizeof(in_port_t)>;
  static PathKey path_key(const sockaddr_in6& a);
  std::map<PathKey, Time> heard_at_;
  UdpCounters cnt_;
};

}  // namespace hooker
