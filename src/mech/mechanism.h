// The seam between hookerd's two layers.
//
// The application side (src/app) keeps the TCP illusion: slots and lanes,
// delivery into the application socket, counted reads, the FIN hold, RSTs.
// A mechanism (src/mech/<name>) carries one connection's two byte streams
// between the hookerds however it likes: framing, credit, ACKs, loss, its
// own sockets. Between them flow bytes, never datagrams:
//   - the mechanism pulls the application's bytes (AppPort::read) when it
//     can send; not reading is the back-pressure, the lanes hold the writer;
//   - it hands over the peer's bytes in order (AppPort::deliver), and keeps
//     what the application side did not take until on_app_room().
// Calls cross the seam once per batch, never per byte.
#pragma once

#include <netinet/in.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/log.h"
#include "core/result.h"

namespace hooker {

using Clock = std::chrono::steady_clock;
using Time = Clock::time_point;
constexpr Time kNever = Time::max();

inline constexpr std::string_view kAppGone =
    "bytes came for an application socket that is gone (closed, or ended early)";

// The application side of one connection, as its mechanism sees it.
class AppPort {
 public:
  // The application's next bytes into iov[0..n): a count, 0 if none is there
  // yet (on_app_readable follows when some is), -1 if its side broke.
  virtual ssize_t read(const iovec* iov, size_t n) = 0;
  // Set once the application will write no more: its stream's length.
  virtual std::optional<uint64_t> final_length() const = 0;
  // The peer's next bytes, in order. Returns how many were taken: fewer
  // when the application holds enough unread (on_app_room follows), -1 once
  // the application can take none ever again. Then the mechanism resets
  // the connection (kAppGone), as TCP answers bytes for a closed socket
  // with an RST: the writer must not believe they arrived.
  virtual ssize_t deliver(std::span<const std::byte> bytes) = 0;
  // Every byte of the peer's stream was delivered: its end may go in.
  virtual void peer_finished() = 0;
  // The application's stream left whole, its end included.
  virtual void sent_all() = 0;
  // The connection failed: both applications are reset, and the MechConn
  // is retired before this returns (no call reaches it any more).
  virtual void abort(std::string_view why) = 0;
  // Calls MechConn::on_deadline at `t` or soon after; the earliest asked
  // for wins, an early call is harmless.
  virtual void wake_at(Time t) = 0;

 protected:
  ~AppPort() = default;
};

// What the application side shows of a connection's wire state.
struct StreamStatus {
  uint64_t bytes_out = 0;             // taken from the application
  uint64_t bytes_in = 0;              // delivered to it
  bool end_sent = false;              // the end of its stream left
  std::optional<uint64_t> peer_end;   // the peer's stream length, once known
  std::vector<const char*> waiting;   // the mechanism's lists it is in
  // Data datagrams each way, for a mechanism that counts them per
  // connection (hookerctl conns); none for one that does not.
  std::optional<uint64_t> datagrams_out, datagrams_in;
  uint64_t drops = 0;  // its datagrams dropped: duplicates, beyond the window, after close
};

// The wire side of one connection. The application side owns it; it lives
// until the end of the loop turn in which it was retired.
class MechConn {
 public:
  virtual ~MechConn() = default;
  // Once the application side holds it: early datagrams, the first bytes.
  virtual void start() = 0;
  virtual void on_app_readable() = 0;  // bytes or a shutdown in its stream
  virtual void on_app_room() = 0;      // the application read some
  virtual void on_deadline(Time now) = 0;
  // hookerd ends the connection: the peer is told, then AppPort::abort.
  virtual void reset(std::string_view why) = 0;
  // Leaves the mechanism's tables now; every entry point passes over it.
  virtual void retire() = 0;
  virtual StreamStatus status() const = 0;
};

// Who the peer is, from the handshake.
struct PeerInfo {
  uint64_t token = 0;       // ours: the peer names the connection by it
  uint64_t peer_token = 0;  // theirs
  sockaddr_in6 peer{};      // the peer hookerd
  // This host's rule's options for the mechanism ("cov=200" of
  // `8080=udplite:cov=200`), checked by the policy; "" for none. Each host
  // applies its own to what it sends.
  std::string opts;
  // The TCP connection's MSS at establishment (0: unknown): its datagrams
  // must fit the same path (wire::payload_for_mss).
  uint32_t mss = 0;
  // This side connected (the TCP client). quic opens the connection's
  // stream from it, on the QUIC connection its SYN started (prepare).
  bool active = false;
};

// What a mechanism asks of hookerd (or of a test).
class MechHost {
 public:
  virtual Time now() const = 0;
  // Poll `fd` for room to write (on_writable), or stop.
  virtual void want_writable(int fd, bool on) = 0;
  // A datagram names a token with no connection: reads the kernel's news
  // first (the connection may be bound by then), and says whether a
  // handshake for it is under way (keep the datagram for it).
  virtual bool expect_token(uint64_t token) = 0;
  // A line of hookerd's log (core/log.h), info unless said otherwise.
  virtual void log(std::string_view line, log::Level level = log::Level::kInfo) = 0;
  // The peer hookerd at `peer` was never heard from over this mechanism's
  // datagrams (a path that passes TCP and drops UDP): connections to its
  // host stay plain TCP for a while (--udp-retry). `mech`: whose socket
  // found it, and may probe the path later (Mechanism::probe_path).
  virtual void peer_unreachable(const sockaddr_in6& /*peer*/, uint8_t /*mech*/) {}
  // A path probe (Mechanism::probe_path) came back from `peer`.
  virtual void path_answered(const sockaddr_in6& /*peer*/) {}

 protected:
  ~MechHost() = default;
};

// One kind of mechanism: its sockets and every connection using it.
class Mechanism {
 public:
  virtual ~Mechanism() = default;
  virtual std::vector<int> fds() const = 0;  // hookerd polls them
  virtual void on_readable(int fd) = 0;
  virtual void on_writable(int fd) = 0;
  virtual void flush() = 0;  // once per loop turn: what waited for room
  virtual void reap() = 0;   // end of the turn: forget the retired
  virtual void housekeeping() = 0;  // every second or so
  // Timers of the mechanism's own, beside its connections' (AppPort::wake_at):
  // quic's QUIC connections (loss recovery, pacing, ACK delay, idle,
  // keep-alive) belong to no one moved connection and run with none.
  // on_deadline is called at deadline() or soon after; early is harmless.
  virtual Time deadline() const { return kNever; }
  virtual void on_deadline(Time /*now*/) {}
  virtual std::unique_ptr<MechConn> open(const PeerInfo& peer, AppPort& port) = 0;
  // A SYN to `peer` proposes this mechanism: what it keeps per peer (quic's
  // handshake) may start now, overlapping TCP's. The peer's hookerd is
  // assumed on our own --port: its option, naming its port, comes only with
  // the SYN-ACK (a guess that is wrong costs an unused handshake). `opts`:
  // this host's rule's options for the mechanism, as PeerInfo's.
  virtual void prepare(const sockaddr_in6& /*peer*/, const std::string& /*opts*/) {}
  // Sends a path probe to the peer hookerd at `to` (HK_WIRE_PROBE_TOKEN);
  // false if this mechanism has none, or no room now.
  virtual bool probe_path(const sockaddr_in6& /*to*/) { return false; }
  // Negotiated but never bound here: the peer must drop its side.
  virtual void refuse(const PeerInfo& peer) = 0;
  // {"counters": {...}, ...}
  virtual void status(nlohmann::json& out) const = 0;
  // What deploying it put in place (sockets, BPF objects), one line each,
  // for `hookerctl mechanisms`.
  virtual std::vector<std::string> loaded() const = 0;
  // A user's BPF object added to it (`hookerctl deploy NAME --object FILE`),
  // for mechanisms made of BPF objects (MechKind::takes_objects); on error
  // nothing of it stays.
  virtual Status load_object(const std::string& path) {
    return Error{"takes no --object (" + path + ")", 0};
  }
};

// Datagrams in and out, batched, buffers owned by the I/O. The real one is
// a UDP socket with GSO/GRO; the conformance suite's is an in-memory link.
class DatagramIo {
 public:
  static constexpr size_t kMaxDatagram = 1432;  // wire::kMaxDatagram
  virtual ~DatagramIo() = default;
  virtual int fd() const = 0;  // -1 if there is nothing to poll
  // Free send buffers left before flush() must run.
  virtual size_t room() const = 0;
  virtual size_t queued() const = 0;  // waiting for flush()
  // The k-th free buffer (k < room()), kMaxDatagram bytes, written in place.
  virtual std::byte* tx_buffer(size_t k) = 0;
  // Queues the first free buffer, `len` bytes, to `to`. `coverage`: for
  // UDP-Lite, the bytes its checksum covers (0: the socket's own); other
  // protocols have no choice and ignore it.
  virtual void commit(size_t len, const sockaddr_in6& to, uint16_t coverage = 0) = 0;
  // Sends what is queued; false: the socket is full (wait for writable).
  virtual Result<bool> flush() = 0;
  // One batch of datagrams; true if more may be waiting.
  using Handler = std::function<void(const sockaddr_in6&, std::span<const std::byte>)>;
  virtual Result<bool> receive(const Handler& on_datagram) = 0;
  // One line for `hookerctl mechanisms`: what it is, where.
  virtual std::string describe() const = 0;

  uint64_t datagrams_sent = 0, datagrams_received = 0, truncated = 0;
  // The path to a peer shrank under a group of datagrams (the route's MTU,
  // or one an ICMP "fragmentation needed" / "packet too big" lowered): the
  // group went out one datagram at a time (the kernel fragments them), and
  // the peer is listed in `shrunk` so the mechanism sizes later datagrams
  // to it by the path as it is now (path_mtu).
  uint64_t groups_split = 0;
  std::vector<sockaddr_in6> shrunk;
  // Datagrams the kernel refused for good (no route, too big alone): gone,
  // as if lost on the way; the mechanism's loss rule applies.
  uint64_t send_failed = 0;
};
// The MTU of the path to `peer` as this host knows it now (the route's, or
// what an ICMP message lowered it to), 0 if unknown.
uint32_t path_mtu(const sockaddr_in6& peer);
// Its counters into a mechanism's status counters: datagrams_sent,
// datagrams_received, datagrams_truncated.
void add_io_counters(nlohmann::json& counters, const DatagramIo& io);
// Every datagram waiting, in batches, to `on_datagram`; an error is logged.
void receive_all(DatagramIo& io, MechHost& host, const DatagramIo::Handler& on_datagram);

// What hookerd tells a mechanism it deploys.
struct MechConfig {
  uint16_t port = 0;                // its sockets' port (the one the TCP option names)
  std::vector<std::string> ifaces;  // where kernel programs of its own attach
  std::string udplite_impl = "auto";  // udplite: kernel, ebpf, or auto (probe)
  // quic: this hookerd's certificate and key, and the CA both peers trust
  // (PEM files), and its congestion control (cubic or bbr).
  std::string quic_cert, quic_key, quic_ca;
  std::string quic_cc = "bbr";
  // An idle connection's connecting side sends a datagram this often, so a
  // NAT's UDP mapping between the hosts does not expire (--keepalive).
  Clock::duration keepalive = std::chrono::seconds(25);
};

// The compiled-in mechanisms, by name and by the id the handshake names.
struct MechKind {
  std::string_view name;
  uint8_t id;      // enum hk_mech
  bool reliable;   // every byte arrives; else an exact prefix, then a reset
  // With its own sockets (hookerd).
  Result<std::unique_ptr<Mechanism>> (*open)(MechHost& host, const MechConfig& cfg);
  // Over a given datagram I/O (the conformance suite). Null for one that
  // carries no bytes (tcp-cc: the connection stays TCP). It takes the
  // config and may fail since `quic` needs certificates (MechConfig::quic_*);
  // `port` means nothing here.
  Result<std::unique_ptr<Mechanism>> (*over)(MechHost& host, std::unique_ptr<DatagramIo> io,
                                             const MechConfig& cfg);
  bool takes_objects = false;  // deploy NAME --object FILE (Mechanism::load_object)
};
// Every compiled-in mechanism, deployable.
std::span<const MechKind> mechanisms();
// Those that carry a connection's bytes (`over`): the conformance suite's.
std::span<const MechKind> carriers();
const MechKind* find_mechanism(std::string_view name);
const MechKind* find_mechanism(uint8_t id);

}  // namespace hooker
