// hookerd's event loop: the kernel's events, the application slots, the UDP
// wire, held FINs and the control socket, all on one epoll.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <optional>
#include <thread>
#include <sys/uio.h>
#include <unordered_map>
#include <vector>

#include "bpf/bpffs.h"
#include "bpf/fd.h"
#include "bpf/kernel.h"
#include "bpf/waker.h"
#include "core/flow.h"
#include "daemon/conn.h"
#include "daemon/fin_hold.h"
#include "daemon/options.h"
#include "daemon/slots.h"
#include "daemon/tuning.h"
#include "mech/udp.h"

struct ring_buffer;

namespace hooker {

// Counted drops and events of the daemon itself (the kernel's are in
// hk_counter); every reason a datagram is not delivered has one.
struct DaemonCounters {
  uint64_t rx_malformed = 0, rx_unknown_token = 0, rx_wrong_source = 0;
  uint64_t rx_duplicate = 0, rx_out_of_order = 0, rx_beyond_window = 0, rx_stashed = 0;
  uint64_t rx_after_close = 0, resets_sent = 0, resets_received = 0;
  uint64_t resets_lost_datagram = 0, resets_peer_silent = 0, resets_local_failure = 0;
  uint64_t rst_injected = 0;
  uint64_t delivery_retries = 0, conns_moved = 0, conns_closed = 0;
  uint64_t writers_woken = 0, writers_not_woken = 0;
};

class Daemon {
 public:
  static Result<std::unique_ptr<Daemon>> start(const Options& o);
  ~Daemon();

  // Runs until SIGINT/SIGTERM. Returns an error if the loop itself fails.
  Status run();

  double ready_ms = 0;  // start() to everything attached
  // Where start-up time went, phase by phase (Table 1 of the benchmarks).
  std::vector<std::pair<std::string, double>> startup_ms;

 private:
  Daemon(const Options& o) : opt_(o) {}
  Status setup();
  Status open_fin_hold();  // runs on a thread while the kernel programs load
  void phase(const char* name);
  std::chrono::steady_clock::time_point phase_t0_ = std::chrono::steady_clock::now();

  // events
  void consume_events();
  static int on_ring_event(void* self, void* data, size_t size);
  void on_event(const hk_event& ev);
  void on_bound(const hk_event& ev);
  void on_udp_readable();
  void on_datagram(const sockaddr_in6& from, std::span<const std::byte> d);
  bool on_fin(const hk_flow& local, uint32_t id);
  void on_timer();
  void on_control();

  // the two directions
  void pump(Conn& c);      // application -> wire
  // The application's next bytes, from whichever lane holds them: a count,
  // 0 if none is there yet (a socket or the timer calls pump again), -1 if
  // the slot broke.
  ssize_t read_lanes(Conn& c, iovec* iov, size_t frames);
  void deliver(Conn& c);  // wire -> application
  uint64_t app_reads(uint32_t slot) const;
  void ack(Conn& c, uint8_t flags = 0);
  bool ack_due(const Conn& c, uint64_t threshold) const;
  void send_reset(uint64_t peer_token, const sockaddr_in6& to);
  // Ends a moved connection as TCP would: both applications get an RST with
  // the exact sequence number (ECONNRESET), the peer hookerd a RESET.
  void reset(Conn& c, const char* why, bool tell_peer);
  void inject_rst(const Conn& c);
  void check_losses();
  void release_fins(Conn& c);
  void drop_guard(const Conn& c);
  bool maybe_retire(Conn& c);
  void retire(Conn& c);
  void reap();
  void flush();
  void keep_pool_full();
  void gc_embryonic();  // and stale FIN-ACK guards
  uint32_t window() const;

  // writers the slow lane refused (writers.cpp)
  void on_writer_waits(uint32_t slot);
  void watch_slot_room(Conn& c, bool on);
  void on_slot_room(Conn& c);
  void wake_writers();
  void check_waiting_writers();
  bool waker_ready(bool wait);
  static uint64_t slot_tag(uint32_t slot);

  std::string status_json() const;

  Options opt_;
  BpffsMount bpffs_;  // outlives kernel_: its pins are removed first
  std::unique_ptr<Kernel> kernel_;
  std::optional<SlotPool> slots_;
  std::optional<UdpTransport> udp_;
  std::unique_ptr<FinHold> fins_;
  std::unique_ptr<Waker> waker_;
  std::optional<Result<std::unique_ptr<Waker>>> waker_loaded_;  // by waker_loading_
  std::atomic<bool> waker_done_{false};
  std::jthread waker_loading_;  // after what it writes: joined before they go
  std::vector<uint64_t> writers_to_wake_;  // tokens, woken at the end of a loop turn
  ring_buffer* ring_ = nullptr;
  Fd epoll_, signal_, timer_, control_;
  Fd raw4_, raw6_;  // RST injection
  bool stop_ = false;
  std::optional<Error> fatal_;  // ends run() with this error
  bool tx_blocked_ = false;

  // Live connections. by_slot_ owns them; retire() takes a connection out
  // of all three at once and hands it to graveyard_, which reap() empties
  // at the end of the loop turn.
  std::vector<std::unique_ptr<Conn>> by_slot_;
  std::unordered_map<uint64_t, Conn*> by_token_;
  std::unordered_map<hk_flow, Conn*, FlowHash> by_flow_;
  std::vector<std::unique_ptr<Conn>> graveyard_;
  // Connections waiting for something, one list per WaitFor (a list too few
  // does not compile); reap() purges the retired from each.
  std::array<WaitList, kWaitKinds> waiting_{WaitList(kWaitUdpRoom), WaitList(kWaitAckRoom),
                                            WaitList(kWaitBatchEnd), WaitList(kWaitAppRoom),
                                            WaitList(kWaitLanding)};
  WaitList& tx_waiters_ = waiting_[kWaitUdpRoom];
  WaitList& ack_waiters_ = waiting_[kWaitAckRoom];
  WaitList& touched_ = waiting_[kWaitBatchEnd];
  WaitList& retry_ = waiting_[kWaitAppRoom];
  WaitList& lane_waiters_ = waiting_[kWaitLanding];
  std::vector<std::pair<uint64_t, sockaddr_in6>> resets_owed_;  // RESETs, the queue was full
  bool in_events_ = false;  // inside consume_events()
  struct Stashed { sockaddr_in6 from; std::vector<std::byte> d; };
  std::unordered_map<uint64_t, std::vector<Stashed>> stash_;  // early datagrams
  size_t stash_bytes_ = 0;
  uint64_t ticks_ = 0;
  uint64_t pool_ready_ = kPoolReady;  // free slots kept (keep_pool_full)
  uint64_t no_slot_seen_ = 0;
  int pool_error_ = 0;                // the last failure to grow it, said once
  DaemonCounters cnt_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

}  // namespace hooker
