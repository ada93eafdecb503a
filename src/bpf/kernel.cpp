#include "bpf/kernel.h"

#include <atomic>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <net/if.h>
#include <sys/random.h>
#include <unistd.h>

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <linux/ethtool.h>
#include <linux/if_link.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <cstring>

#include "core/abi.h"
#include "core/log.h"
#include "ingress.skel.h"
#include "redirector.skel.h"
#include "bpf/uapi_new.h"

namespace hooker {

// libbpf's messages into hookerd's log (core/log.h says at which level).
static int libbpf_print(enum libbpf_print_level level, const char* fmt, va_list ap) {
  // Formatted only when its level would be shown: libbpf's debug output at
  // load is large, and costs start-up time when formatted for nothing.
  if (!log::enabled(level == LIBBPF_WARN ? log::Level::kWarn : log::Level::kDebug)) return 0;
  char small[512];
  va_list again;
  va_copy(again, ap);
  int n = vsnprintf(small, sizeof(small), fmt, ap);
  if (n < 0) {
    va_end(again);
    return 0;
  }
  if (static_cast<size_t>(n) < sizeof(small)) {
    log::libbpf_message(level, std::string_view(small, static_cast<size_t>(n)));
  } else {  // the verifier's log: up to megabytes
    std::string big(static_cast<size_t>(n) + 1, '\0');
    vsnprintf(big.data(), big.size(), fmt, again);
    big.resize(static_cast<size_t>(n));
    log::libbpf_message(level, big);
  }
  va_end(again);
  return n;
}

IngressHook ingress_hook_for(const std::string& mode, const std::string& iface) {
  if (mode == "native") return IngressHook::kXdpNative;
  if (mode == "generic") return IngressHook::kXdpGeneric;
  if (mode == "tc") return IngressHook::kTc;
  ethtool_drvinfo info{};
  info.cmd = ETHTOOL_GDRVINFO;
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, iface.c_str(), IFNAMSIZ - 1);
  ifr.ifr_data = reinterpret_cast<char*>(&info);
  Fd s(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (ioctl(s.get(), SIOCETHTOOL, &ifr) < 0) return IngressHook::kXdpNative;
  return std::strcmp(info.driver, "veth") == 0 ? IngressHook::kTc : IngressHook::kXdpNative;
}

void route_libbpf_log() { libbpf_set_print(libbpf_print); }

static double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
      .count();
}

static Error bpf_error(const std::string& what, int ret) {
  return Error{what, ret < 0 ? -ret : errno};
}

Result<std::unique_ptr<Kernel>> Kernel::load(const KernelConfig& cfg) {
  std::unique_ptr<Kernel> k(new Kernel());
  auto t0 = std::chrono::steady_clock::now();

  // The ingress program first, and its links made on a thread of their own
  // while the redirector is verified: a tcx link waits out an RCU grace
  // period (4-20 ms here) that then costs start-up nothing. With no token
  // or FIN guard yet, the program lets every packet through. Declared after
  // k, so joined before k is gone, on every return.
  if (auto s = k->load_ingress(cfg); !s) return s.error();
  Status linked = ok();
  std::jthread linking([&] { linked = k->link_ingress(cfg); });

  k->redir_ = redirector_bpf__open();
  if (!k->redir_) return sys_error("open the redirector BPF object");
  k->redir_->rodata->hk_udp_port = cfg.udp_port;
  __u64 secret[2];
  if (getrandom(secret, sizeof(secret), 0) != sizeof(secret))
    return sys_error("getrandom for the token secret");
  k->redir_->rodata->hk_secret[0] = secret[0];
  k->redir_->rodata->hk_secret[1] = secret[1];
  bpf_map__set_max_entries(k->redir_->maps.slot_out, cfg.max_slots);
  bpf_map__set_max_entries(k->redir_->maps.free_slots, cfg.max_slots);
  // The application socket, `in` and `out` of each slot, and application
  // sockets still open after their slot moved on.
  bpf_map__set_max_entries(k->redir_->maps.socks, 4 * cfg.max_slots);
  bpf_map__set_max_entries(k->redir_->maps.consumed, cfg.max_slots);
  bpf_map__set_max_entries(k->redir_->maps.embryos, cfg.max_slots);
  bpf_map__set_max_entries(k->redir_->maps.embryo_flows, cfg.max_slots);
  bpf_map__set_max_entries(k->redir_->maps.lanes, cfg.max_slots);
  bpf_map__set_max_entries(k->redir_->maps.sends, cfg.max_slots);
  // One instance of the maps the two objects share: the ingress made them
  // (tokens and fin_guards sized there).
  struct { bpf_map* redir; bpf_map* ingress; const char* what; } shared[] = {
      {k->redir_->maps.tokens, k->ingress_->maps.tokens, "the token map"},
      {k->redir_->maps.counters, k->ingress_->maps.counters, "the counter map"},
      {k->redir_->maps.fin_guards, k->ingress_->maps.fin_guards, "the FIN-ACK guards"},
      {k->redir_->maps.fin_guards_live, k->ingress_->maps.fin_guards_live,
       "the FIN-ACK guard count"},
  };
  for (auto& m : shared)
    if (int r = bpf_map__reuse_fd(m.redir, bpf_map__fd(m.ingress)))
      return bpf_error(std::string("share ") + m.what + " with the ingress program", r);
  if (int r = redirector_bpf__load(k->redir_))
    return bpf_error("load the redirector (sock_ops + sk_msg) into the kernel", r);
  auto lanes = Mapping<hk_lanes>::of(bpf_map__fd(k->redir_->maps.lanes), cfg.max_slots);
  if (!lanes) return lanes.error();
  k->lanes_ = lanes.take();
  auto consumed = Mapping<uint64_t>::of(bpf_map__fd(k->redir_->maps.consumed), cfg.max_slots);
  if (!consumed) return consumed.error();
  k->consumed_ = consumed.take();
  auto live = Mapping<uint64_t>::of(bpf_map__fd(k->redir_->maps.fin_guards_live), 1);
  if (!live) return live.error();
  k->fin_guards_live_ = live.take();
  auto mask = PortMask::of(bpf_map__fd(k->redir_->maps.port_mask));
  if (!mask) return mask.error();
  k->port_mask_ = mask.take();

  for (auto& r : cfg.policy.rules())
    if (auto s = k->set_rule(r); !s) return s.error();
  k->times_.open_load_ms = ms_since(t0);

  auto t1 = std::chrono::steady_clock::now();
  linking.join();
  if (!linked) return linked.error();
  if (auto s = k->attach(cfg); !s) return s.error();
  auto t2 = std::chrono::steady_clock::now();
  if (!cfg.pin_dir.empty())
    if (auto s = k->pin(cfg.pin_dir); !s) return s.error();
  k->times_.pin_ms = ms_since(t2);
  k->times_.attach_ms = ms_since(t1);
  // Servers started before hookerd. Not fatal: they stay plain TCP, said
  // once, as they did before this existed.
  auto ports = cfg.policy.ports();
  if (listening_on_any(ports)) {
    auto f = k->follow_listeners(ports);
    if (!f || !f->refused.empty())
      log::warn(f ? f->refused : f.error().message());
  }
  return k;
}

Status Kernel::load_ingress(const KernelConfig& cfg) {
  ingress_ = ingress_bpf__open();
  if (!ingress_) return sys_error("open the ingress BPF object");
  ingress_->rodata->hk_udp_port = cfg.udp_port;
  bpf_map__set_max_entries(ingress_->maps.tokens, cfg.max_slots);
  bpf_map__set_max_entries(ingress_->maps.fin_guards, cfg.max_slots);
  // Only the programs the interfaces get are loaded: verifying the other
  // hook's copy cost start-up 4-6 ms for nothing.
  bool xdp = false, tc = false;
  for (const auto& name : cfg.ifaces)
    (ingress_hook_for(cfg.xdp_mode, name) == IngressHook::kTc ? tc : xdp) = true;
  bpf_program__set_autoload(ingress_->progs.hk_ingress, xdp);
  bpf_program__set_autoload(ingress_->progs.hk_ingress_tc, tc);
  if (int r = ingress_bpf__load(ingress_))
    return bpf_error("load the ingress (XDP) program into the kernel", r);
  return ok();
}

Status Kernel::link_ingress(const KernelConfig& cfg) {
  auto t = std::chrono::steady_clock::now();
  for (const auto& name : cfg.ifaces) {
    unsigned idx = if_nametoindex(name.c_str());
    if (!idx) return sys_error("no interface '" + name + "' in this network namespace");
    // A BPF link either way: it detaches when hookerd's fds close, even on
    // a crash. libbpf 1.1 knows neither XDP modes in attach_xdp nor tcx,
    // hence link_create.
    IngressHook hook = ingress_hook_for(cfg.xdp_mode, name);
    const char* what = hook == IngressHook::kTc ? "TC (tcx) ingress"
                       : hook == IngressHook::kXdpGeneric ? "XDP (generic mode)"
                                                          : "XDP (native mode)";
    LIBBPF_OPTS(bpf_link_create_opts, lo,
                .flags = hook == IngressHook::kXdpGeneric ? XDP_FLAGS_SKB_MODE
                         : hook == IngressHook::kXdpNative ? XDP_FLAGS_DRV_MODE
                                                           : 0u);
    int fd = hook == IngressHook::kTc
                 ? bpf_link_create(bpf_program__fd(ingress_->progs.hk_ingress_tc),
                                   static_cast<int>(idx), kBpfTcxIngress, &lo)
                 : bpf_link_create(bpf_program__fd(ingress_->progs.hk_ingress),
                                   static_cast<int>(idx), BPF_XDP, &lo);
    if (fd < 0)
      return sys_error("attach " + std::string(what) + " to " + name +
                       " (another program there? see: ip link show " + name +
                       "; bpftool net show dev " + name + ")");
    ingress_links_.emplace_back(fd);
  }
  times_.ingress_ms = ms_since(t);
  return ok();
}

Status Kernel::attach(const KernelConfig& cfg) {
  auto t = std::chrono::steady_clock::now();
  auto lap = [&t](double& into) {
    into = ms_since(t);
    t = std::chrono::steady_clock::now();
  };
  // The verdict program first: a socket must never sit in the SOCKHASH
  // without it. (The slots' SOCKMAP holds redirect targets only.)
  int prog = bpf_program__fd(redir_->progs.hk_redirect);
  if (bpf_prog_attach(prog, socks_fd(), BPF_SK_MSG_VERDICT, 0))
    return sys_error("attach the sk_msg program to the SOCKHASH");
  sk_msg_attached_ = true;
  lap(times_.sk_msg_ms);

  // Application sends and reads are counted before any connection can be
  // moved.
  sends_link_ = bpf_program__attach_trace(redir_->progs.hk_app_sent);
  if (!sends_link_) return sys_error("attach to the sock_send_length tracepoint");
  reads_link_ = bpf_program__attach_trace(redir_->progs.hk_app_read);
  if (!reads_link_) return sys_error("attach to the sock_recv_length tracepoint");
  lap(times_.tracepoints_ms);

  cgroup_ = cfg.cgroup;
  cgroup_fd_ = open(cfg.cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cgroup_fd_ < 0) return sys_error("open cgroup " + cfg.cgroup);
  sockops_link_ = bpf_program__attach_cgroup(redir_->progs.hk_sockops, cgroup_fd_);
  if (!sockops_link_) {
    sockops_link_ = nullptr;
    return sys_error("attach the sock_ops program to cgroup " + cfg.cgroup);
  }
  lap(times_.sockops_ms);

  return ok();
}

Status Kernel::pin(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Error{"create pin directory " + dir, ec.value()};
  struct { const char* name; bpf_map* map; } maps[] = {
      {"counters", redir_->maps.counters},
      {"tokens", redir_->maps.tokens},
      {"socks", redir_->maps.socks},
  };
  for (auto& m : maps) {
    std::string path = dir + "/" + m.name;
    unlink(path.c_str());  // a stale pin of a crashed hookerd
    if (bpf_obj_pin(bpf_map__fd(m.map), path.c_str()))
      return sys_error("pin map at " + path);
    pins_.push_back(path);
  }
  return ok();
}

Kernel::~Kernel() {
  listeners_.reset();
  ingress_links_.clear();
  if (sockops_link_) bpf_link__destroy(sockops_link_);
  if (reads_link_) bpf_link__destroy(reads_link_);
  if (sends_link_) bpf_link__destroy(sends_link_);
  if (sk_msg_attached_)
    bpf_prog_detach2(bpf_program__fd(redir_->progs.hk_redirect), socks_fd(),
                     BPF_SK_MSG_VERDICT);
  for (auto& p : pins_) unlink(p.c_str());
  if (!pins_.empty()) rmdir(std::filesystem::path(pins_.front()).parent_path().c_str());
  if (cgroup_fd_ >= 0) close(cgroup_fd_);
  if (ingress_) ingress_bpf__destroy(ingress_);
  if (redir_) redirector_bpf__destroy(redir_);
}

int Kernel::socks_fd() const { return bpf_map__fd(redir_->maps.socks); }
int Kernel::sk_state_fd() const { return bpf_map__fd(redir_->maps.sk_state); }
int Kernel::slot_out_fd() const { return bpf_map__fd(redir_->maps.slot_out); }
int Kernel::free_slots_fd() const { return bpf_map__fd(redir_->maps.free_slots); }
int Kernel::tokens_fd() const { return bpf_map__fd(redir_->maps.tokens); }
int Kernel::counters_fd() const { return bpf_map__fd(redir_->maps.counters); }
int Kernel::events_fd() const { return bpf_map__fd(redir_->maps.events); }
int Kernel::fin_guards_fd() const { return bpf_map__fd(redir_->maps.fin_guards); }
int Kernel::udp_blocked_fd() const { return bpf_map__fd(redir_->maps.udp_blocked); }

bool Kernel::handshaking(const hk_flow& wire) const {
  hk_embryo e;
  hk_token t;
  return bpf_map_lookup_elem(bpf_map__fd(redir_->maps.embryos), &wire, &e) == 0 &&
         bpf_map_lookup_elem(tokens_fd(), &e.token, &t) == 0;
}

std::optional<hk_embryo> Kernel::embryo(const hk_flow& wire) const {
  hk_embryo e;
  hk_token t;
  if (bpf_map_lookup_elem(bpf_map__fd(redir_->maps.embryos), &wire, &e) != 0 ||
      bpf_map_lookup_elem(tokens_fd(), &e.token, &t) != 0 || t.state != HK_TOKEN_EMBRYONIC)
    return std::nullopt;
  return e;
}

std::optional<hk_flow> Kernel::embryo_flow(uint64_t token) const {
  hk_flow f;
  if (bpf_map_lookup_elem(bpf_map__fd(redir_->maps.embryo_flows), &token, &f) != 0)
    return std::nullopt;
  return f;
}

bool Kernel::del_fin_guard(const hk_flow& wire) {
  // None held anywhere (the kernel raises the count before it inserts one):
  // no system call for nothing, at the end of every connection.
  if (std::atomic_ref(*fin_guards_live_.at(0)).load(std::memory_order_acquire) == 0) return false;
  if (bpf_map_delete_elem(fin_guards_fd(), &wire) != 0) return false;
  std::atomic_ref(*fin_guards_live_.at(0)).fetch_sub(1);
  return true;
}

Status Kernel::set_rule(const PortRule& r) {
  hk_port_rule v = r.kernel();
  port_mask_.add_port(r.port);  // before the rule: its handshakes must look
  if (bpf_map_update_elem(bpf_map__fd(redir_->maps.ports), &r.port, &v, BPF_ANY))
    return sys_error("put the rule " + r.str() + " in the policy map");
  return ok();
}

void Kernel::set_deployed(uint32_t mechs) {
  // The .bss is mapped into hookerd: the next handshake reads the new set.
  std::atomic_ref(redir_->bss->hk_deployed).store(mechs, std::memory_order_release);
}

Result<Listeners::Outcome> Kernel::follow_listeners(const std::vector<uint16_t>& ports) {
  if (!listeners_) {
    auto l = Listeners::load(cgroup_, bpf_map__fd(redir_->maps.listener_cgs));
    if (!l) return l.error();
    listeners_ = l.take();
  }
  return listeners_->follow(ports);
}

Status Kernel::set_file_rules(const hk_rules& t) {
  // The old table's ports and the new one's while either may be read; a
  // failed swap leaves that superset, which costs only time.
  port_mask_.widen(t);
  auto s = swap_file_rules(t);
  if (s) port_mask_.set_file(t);
  return s;
}

Status Kernel::swap_file_rules(const hk_rules& t) {
  int outer = bpf_map__fd(redir_->maps.rule_sets);
  __u32 zero = 0;
  if (t.n == 0) {
    if (bpf_map_delete_elem(outer, &zero) && errno != ENOENT)
      return sys_error("remove the file's rules from the kernel");
    return ok();
  }
  int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "hk_rules", sizeof(__u32), sizeof(hk_rules), 1,
                          nullptr);
  if (fd < 0) return sys_error("create a map for the file's rules");
  Fd inner(fd);
  if (bpf_map_update_elem(inner.get(), &zero, &t, BPF_ANY))
    return sys_error("write the file's rules into their map");
  // The swap. The old inner map lives on while a program still reads it.
  __u32 ifd = static_cast<__u32>(inner.get());
  if (bpf_map_update_elem(outer, &zero, &ifd, BPF_ANY))
    return sys_error("swap the file's rules into the kernel");
  return ok();
}

Status Kernel::del_rule(uint16_t port) {
  if (bpf_map_delete_elem(bpf_map__fd(redir_->maps.ports), &port) && errno != ENOENT)
    return sys_error("remove port " + std::to_string(port) + " from the policy map");
  port_mask_.drop_port(port);
  return ok();
}

uint64_t Kernel::counter(hk_counter c) const {
  int ncpu = libbpf_num_possible_cpus();
  std::vector<uint64_t> per(ncpu > 0 ? ncpu : 1);
  __u32 i = c;
  uint64_t sum = 0;
  if (bpf_map_lookup_elem(counters_fd(), &i, per.data()) == 0)
    for (auto v : per) sum += v;
  return sum;
}

std::vector<uint64_t> Kernel::counters() const {
  std::vector<uint64_t> out(HK_CNT__MAX, 0);
  for (int i = 0; i < HK_CNT__MAX; i++) out[i] = counter(static_cast<hk_counter>(i));
  return out;
}

}  // namespace hooker
