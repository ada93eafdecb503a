// hookerd's event loop: the kernel's events, the application slots, the
// mechanisms' sockets, held FINs and the control socket, all on one epoll.
// It is the application side's host (AppSide: lists, FINs, resets,
// deadlines) and the mechanisms' (MechHost).
#pragma once

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <thread>
#include <sys/uio.h>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "app/conn.h"
#include "app/inject.h"
#include "bpf/bpffs.h"
#include "bpf/fd.h"
#include "bpf/kernel.h"
#include "core/flow.h"
#include "core/wait_list.h"
#include "daemon/deploy.h"
#include "daemon/fin_hold.h"
#include "daemon/metrics.h"
#include "daemon/options.h"
#include "daemon/slots.h"
#include "daemon/tuning.h"
#include "mech/mechanism.h"

struct ring_buffer;

namespace hooker {

// Counted events of the application side (the kernel's are in hk_counter,
// each mechanism's in its status).
struct DaemonCounters {
  uint64_t rst_injected = 0, delivery_retries = 0, conns_moved = 0, conns_closed = 0;
  uint64_t conns_unknown_mech = 0;
  uint64_t fins_before_bind = 0;  // held for a handshake still completing
  uint64_t handshakes_completed = 0;  // by hookerd: the client's last ACK was lost
  uint64_t wake_acks_sent = 0, wake_acks_failed = 0;
  uint64_t peers_marked_unreachable = 0;  // peer_unreachable, each time
  uint64_t path_probes_sent = 0, path_probes_answered = 0;  // to peers in udp_blocked
};

// What hookerd tells the mechanisms it deploys, from its options.
inline MechConfig mech_config(const Options& o) {
  MechConfig c;
  c.port = o.port;
  c.ifaces = o.ifaces;
  c.udplite_impl = o.udplite_impl;
  c.quic_cert = o.quic_cert;
  c.quic_key = o.quic_key;
  c.quic_ca = o.quic_ca;
  c.quic_cc = o.quic_cc;
  c.keepalive = std::chrono::seconds(o.keepalive_s);
  return c;
}

class Daemon final : AppSide, MechHost {
 public:
  static Result<std::unique_ptr<Daemon>> start(const Options& o);
  ~Daemon();

  // Runs until SIGINT/SIGTERM. Returns an error if the loop itself fails.
  Status run();

  double ready_ms = 0;  // start() to everything attached
  // Where start-up time went, phase by phase (Table 1 of the benchmarks).
  std::vector<std::pair<std::string, double>> startup_ms;

 private:
  Daemon(const Options& o) : opt_(o), deployed_(*this, mech_config(o)) {}
  Status setup();
  Status prepare_mechanisms();
  Status open_fin_hold();  // runs on a thread while the kernel programs load
  void phase(const char* name);
  std::chrono::steady_clock::time_point phase_t0_ = std::chrono::steady_clock::now();

  // events
  void consume_events();
  static int on_ring_event(void* self, void* data, size_t size);
  void on_event(const hk_event& ev);
  void on_bound(const hk_event& ev);
  void on_need_mech(const hk_event& ev);
  void on_fell_back(const hk_event& ev);
  std::string rule_opts(const hk_event& ev, uint8_t mech) const;
  bool on_fin(const hk_flow& local, uint32_t id, bool rst);
  bool complete_handshake(const hk_flow& wire);
  void on_timer();
  void on_control();
  void run_deadlines();
  int next_deadline_ms() const;

  // AppSide
  void wait(Conn& c, AppWait why) override;
  void peer_finished(Conn& c) override { release_fins(c); }
  void sent_all(Conn& c) override { maybe_retire(c); }
  void abort(Conn& c, std::string_view why) override;
  void wake_at(Conn& c, Time t) override;
  // MechHost
  Time now() const override { return Clock::now(); }
  void want_writable(int fd, bool on) override;
  bool expect_token(uint64_t token) override;
  void log(std::string_view line, log::Level level) override;
  void peer_unreachable(const sockaddr_in6& peer, uint8_t mech) override;  // unreachable.cpp
  void path_answered(const sockaddr_in6& peer) override;

  Mechanism* mechanism(uint8_t id) const;
  void release_fins(Conn& c);
  void drop_guard(const Conn& c);
  bool maybe_retire(Conn& c);
  void retire(Conn& c);
  void reap();
  void keep_pool_full();
  void gc_embryonic();  // and stale FIN-ACK guards
  void gc_unreachable();  // udp_blocked: probes, renewals, entries past their time
  uint64_t retry_ns() const;  // --udp-retry
  nlohmann::json unreachable_json() const;  // the live ones, for status

  // writers the slow lane refused (writers.cpp)
  void on_writer_waits(uint32_t slot);
  void watch_slot_room(Conn& c, bool on);
  void on_slot_room(Conn& c);
  void check_waiting_writers();
  static uint64_t slot_tag(uint32_t slot);

  std::string status_json() const;
  // The control socket, with its owner and mode (--control-group).
  Status open_control();
  // Every counter, per mechanism where it is one's (`hookerctl stats`,
  // the metrics), and each live connection (`conns`, status); stats.cpp.
  nlohmann::json stats_json() const;
  nlohmann::json conns_json() const;
  nlohmann::json kernel_counters() const;
  nlohmann::json daemon_counters() const;  // the application side's own
  // Bytes carried by connections already retired, per mechanism: a
  // counter must not go down when a connection ends.
  struct Carried { uint64_t sent = 0, received = 0; };
  std::map<uint8_t, Carried> carried_;
  // mechanisms, deploy NAME, undeploy NAME [--force] (mech_ctl.cpp)
  std::string mech_request(const std::string& req);
  // The configuration file's rules (file_policy.cpp): checked, compiled and
  // swapped into the kernel whole, or nothing changes. `why` is where they
  // came from, for the log and --eager's deployments.
  Status set_file_rules(const std::vector<MatchRule>& rules, const std::string& why);
  // policy reload: the file again; only its rules take effect (the other
  // keys at the next start). The JSON answer.
  nlohmann::json reload_policy();
  nlohmann::json file_rules_json() const;
  // The options of the file rule a moved connection followed
  // (hk_event.rule), if that rule is still the one in force.
  const MatchRule* file_rule_of(uint32_t ref) const;
  std::vector<MatchRule> file_rules_;  // in force, in the file's order
  uint32_t rules_gen_ = 0;            // bumped by each load
  std::vector<Conn*> users_of(uint8_t mech) const;

  Options opt_;
  BpffsMount bpffs_;  // outlives kernel_: its pins are removed first
  std::unique_ptr<Kernel> kernel_;
  std::optional<SlotPool> slots_;
  Deployments deployed_;  // the mechanisms, deployed at start or later
  std::unique_ptr<FinHold> fins_;
  ring_buffer* ring_ = nullptr;
  Fd epoll_, signal_, timer_, control_;
  std::optional<MetricsServer> metrics_;  // --metrics
  std::optional<Injector> inject_;
  bool stop_ = false;

  // Live connections. by_slot_ owns them (and each its mechanism's side);
  // retire() takes a connection out of all three at once and hands it to
  // graveyard_, which reap() empties at the end of the loop turn.
  std::vector<std::unique_ptr<Conn>> by_slot_;
  std::unordered_map<uint64_t, Conn*> by_token_;
  std::unordered_map<hk_flow, Conn*, FlowHash> by_flow_;
  // FINs of connections our SYN-ACK accepted that are not established yet
  // (the client's last handshake ACK was lost, so its FIN completes the
  // handshake): held until the connection binds, then as its own.
  std::unordered_map<hk_flow, std::vector<uint32_t>, FlowHash> early_fins_;
  // The tokens of handshakes complete_handshake() tried once: the SYN-ACK's
  // retry is the way after that (an ACK the socket ignored needs no twin).
  std::unordered_set<uint64_t> acked_embryos_;
  std::vector<std::unique_ptr<Conn>> graveyard_;
  // Application sides waiting for something, one list per AppWait; reap()
  // purges the retired from each.
  std::array<WaitList<Conn, AppWait>, kAppWaitKinds> waiting_{
      WaitList<Conn, AppWait>(kWaitAppRoom), WaitList<Conn, AppWait>(kWaitLanding)};
  // The mechanisms' deadlines (AppPort::wake_at), earliest first, by token:
  // an entry whose connection is gone, or that asks for a time the
  // connection no longer has (Conn::scheduled), is passed over.
  using Deadline = std::pair<Time, uint64_t>;
  std::priority_queue<Deadline, std::vector<Deadline>, std::greater<>> deadlines_;
  bool in_events_ = false;  // inside consume_events()
  uint64_t ticks_ = 0;
  uint64_t pool_ready_ = kPoolReady;  // free slots kept (keep_pool_full)
  uint64_t no_slot_seen_ = 0;
  uint64_t binds_unchecked_ = 0;  // since the last keep_pool_full
  int pool_error_ = 0;                // the last failure to grow it, said once
  DaemonCounters cnt_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

}  // namespace hooker
