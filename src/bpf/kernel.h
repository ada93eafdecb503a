// The kernel half of Hooker, loaded and attached: the redirector (sock_ops +
// sk_msg) on a cgroup and the ingress (XDP, or tcx) on interfaces. Destroying it
// detaches and unpins everything; links make a crash detach too.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bpf/fd.h"
#include "bpf/listeners.h"
#include "bpf/mapping.h"
#include "core/abi.h"
#include "bpf/port_mask.h"
#include "core/policy.h"
#include "core/result.h"

struct redirector_bpf;
struct ingress_bpf;
struct bpf_link;

namespace hooker {

struct KernelConfig {
  std::string cgroup;                 // cgroup v2 directory
  std::vector<std::string> ifaces;    // the ingress program on each
  std::string xdp_mode = "auto";      // auto, native, generic or tc
  uint16_t udp_port = 0;              // hookerd's UDP port, in the option
  Policy policy;                      // server ports whose connections move
  std::string pin_dir;                // where maps are pinned for inspection
  uint32_t max_slots = 0;
};

// Where load and attach time goes (Table 1 of the benchmarks).
struct LoadTimes {
  double open_load_ms = 0, attach_ms = 0;
  double sk_msg_ms = 0, tracepoints_ms = 0, sockops_ms = 0, ingress_ms = 0, pin_ms = 0;
};

class Kernel {
 public:
  static Result<std::unique_ptr<Kernel>> load(const KernelConfig& cfg);
  ~Kernel();
  Kernel(const Kernel&) = delete;
  Kernel& operator=(const Kernel&) = delete;

  int socks_fd() const;
  int sk_state_fd() const;
  int slot_out_fd() const;
  int free_slots_fd() const;
  int tokens_fd() const;
  int counters_fd() const;
  int events_fd() const;
  // Removes the FIN-ACK guard of a connection (its wire flow), keeping the
  // count the ingress program reads in step (bpf/maps.bpf.h). Whether one
  // was there.
  bool del_fin_guard(const hk_flow& wire);
  int fin_guards_fd() const;
  // Whether our SYN-ACK accepted Hooker for this connection (its wire flow)
  // and it is not bound yet: not established, or established a moment ago
  // with its BOUND event on the way (the entry goes only after the event).
  bool handshaking(const hk_flow& wire) const;
  // A handshake our SYN-ACK accepted and the client has not completed: by
  // the tuple as on the wire, or by our token (its tuple then).
  std::optional<hk_embryo> embryo(const hk_flow& wire) const;
  std::optional<hk_flow> embryo_flow(uint64_t token) const;
  // Peers UDP does not reach (hk_udp_blocked): their connections stay TCP.
  int udp_blocked_fd() const;
  // Each slot's two lanes into hookerd, shared with the sk_msg program.
  hk_lanes* lanes(uint32_t slot) const { return lanes_.at(slot); }
  // Bytes each slot's application has read (sock_recv_length), mapped.
  uint64_t* consumed(uint32_t slot) const { return consumed_.at(slot); }
  const LoadTimes& times() const { return times_; }

  // The policy map, changed while connections run: each handshake step
  // reads it once, so only connections that start afterwards follow.
  Status set_rule(const PortRule& r);
  Status del_rule(uint16_t port);
  // The configuration file's rules, all at once: a fresh inner map swapped
  // into `rule_sets` by one update (an empty table removes it), so a
  // handshake step sees the old policy or the new one, never a mix.
  Status set_file_rules(const hk_rules& t);
  // The mechanisms deployed (HK_MECH_BIT each): from this call on, new
  // handshakes name only these; a rule's other mechanisms keep their
  // connections plain and raise HK_EV_NEED_MECH.
  void set_deployed(uint32_t mechs);
  // Listeners on these ports that were opened before their rule negotiate
  // from now on (bpf/listeners.bpf.c); loads the iterator on first use.
  Result<Listeners::Outcome> follow_listeners(const std::vector<uint16_t>& ports);

  // Sum of the per-CPU counters, indexed by enum hk_counter.
  std::vector<uint64_t> counters() const;
  uint64_t counter(hk_counter c) const;

 private:
  Kernel() = default;
  Status load_ingress(const KernelConfig& cfg);  // the ingress object and the maps it shares
  Status link_ingress(const KernelConfig& cfg);  // its links on the interfaces
  Status attach(const KernelConfig& cfg);
  Status swap_file_rules(const hk_rules& t);
  Status pin(const std::string& dir);

  redirector_bpf* redir_ = nullptr;
  ingress_bpf* ingress_ = nullptr;
  int cgroup_fd_ = -1;
  bpf_link* sockops_link_ = nullptr;
  bpf_link* reads_link_ = nullptr;
  bpf_link* sends_link_ = nullptr;
  bool sk_msg_attached_ = false;
  std::vector<Fd> ingress_links_;  // XDP or tcx links
  Mapping<hk_lanes> lanes_;
  Mapping<uint64_t> consumed_;
  Mapping<uint64_t> fin_guards_live_;
  PortMask port_mask_;
  std::vector<std::string> pins_;
  std::string cgroup_;
  std::unique_ptr<Listeners> listeners_;
  LoadTimes times_;
};

// Where the ingress program runs on an interface. `auto` picks XDP in the
// driver, except on veth: native XDP there turns off GSO on the peer (one
// trip through the stack per 1.4 KB instead of per 64 KB), and generic XDP
// copies every GSO packet into one linear buffer (a tenth of all CPU at 10
// Gbit/s, and a third of plain TCP's throughput on the same interface);
// a TC (tcx) ingress program runs the same checks on the packet as it is.
enum class IngressHook { kXdpNative, kXdpGeneric, kTc };
IngressHook ingress_hook_for(const std::string& mode, const std::string& iface);

// libbpf's own messages go through hookerd's log (core/log.h: warnings at
// warn, the verifier's log of a failed load at error, the rest at debug).
void route_libbpf_log();

}  // namespace hooker
