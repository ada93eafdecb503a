#include "daemon/daemon.h"
#include "daemon/policy_ctl.h"
#include "core/prometheus.h"

#include "daemon/tuning.h"
#include "core/log.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <net/if.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <sys/un.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <thread>

namespace hooker {

namespace {
enum Tag : uint64_t { kRing = 1, kMech, kSlot, kSignal, kTimer, kControl, kFins, kMetrics };
uint64_t tag(Tag t, uint32_t i = 0) { return (uint64_t{t} << 32) | i; }

Status epoll_add(int ep, int fd, uint32_t events, uint64_t data) {
  epoll_event e{};
  e.events = events;
  e.data.u64 = data;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) return sys_error("epoll_ctl add");
  return ok();
}

}  // namespace

uint64_t Daemon::slot_tag(uint32_t slot) { return tag(kSlot, slot); }

Result<std::unique_ptr<Daemon>> Daemon::start(const Options& o) {
  std::unique_ptr<Daemon> d(new Daemon(o));
  if (auto s = d->setup(); !s) return s.error();
  d->ready_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                          d->started_)
                    .count();
  return d;
}

Status Daemon::open_fin_hold() {
  auto f = FinHold::open(opt_.port, opt_.redirect,
                         [this](const hk_flow& fl, uint32_t id, bool rst) {
                           return on_fin(fl, id, rst);
                         });
  if (!f) return f.error();
  fins_ = f.take();
  return ok();
}

void Daemon::phase(const char* name) {
  auto now = std::chrono::steady_clock::now();
  startup_ms.emplace_back(name, std::chrono::duration<double, std::milli>(now - phase_t0_).count());
  phase_t0_ = now;
}

Status Daemon::setup() {
  route_libbpf_log();
  // The mechanisms' sockets first: if the port is taken nothing else is
  // touched.
  if (auto s = prepare_mechanisms(); !s) return s;

  // The control socket next: a second hookerd on the same path must fail
  // before attaching anything. The metrics port too, if asked for.
  if (auto st = open_control(); !st) return st;
  if (opt_.metrics) {
    auto m = MetricsServer::open(*opt_.metrics);
    if (!m) return m.error();
    metrics_.emplace(m.take());
  }
  phase("udp_and_control");

  // Interfaces are checked before anything is loaded or installed.
  for (auto& i : opt_.ifaces)
    if (!if_nametoindex(i.c_str()))
      return Error{"no interface '" + i + "' in this network namespace (ip link shows them)", 0};

  // The pin directory before anything is loaded: a machine without a BPF
  // filesystem gets one, or hookerd stops here with nothing attached.
  if (!opt_.pin_dir.empty()) {
    auto m = ensure_bpffs(opt_.pin_dir);
    if (!m) return m.error();
    bpffs_ = m.take();
    if (!bpffs_.mounted_at().empty())
      log::info("mounted a BPF filesystem at " + bpffs_.mounted_at() + " (there was none)");
  }
  phase("pin_dir");

  // The FIN-hold rules are installed by iptables processes: they run while
  // the kernel programs load. A failed start still waits for them, and the
  // destructor removes them.
  Status rules_status = ok();
  std::thread rules([this, &rules_status] { rules_status = open_fin_hold(); });
  struct Join {
    std::thread& t;
    ~Join() { if (t.joinable()) t.join(); }
  } join{rules};

  epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_.valid()) return sys_error("epoll_create1");
  KernelConfig kc{opt_.cgroup, opt_.ifaces, opt_.xdp_mode, opt_.port, opt_.redirect,
                  opt_.pin_dir, opt_.max_conns};
  auto slots_ok = [&]() -> Status {
    auto k = Kernel::load(kc);
    if (!k) return k.error();
    kernel_ = k.take();
    const LoadTimes& t = kernel_->times();
    startup_ms.emplace_back("bpf_open_load", t.open_load_ms);
    startup_ms.emplace_back("bpf_attach", t.attach_ms);
    startup_ms.emplace_back("attach_sk_msg", t.sk_msg_ms);
    startup_ms.emplace_back("attach_tracepoints", t.tracepoints_ms);
    startup_ms.emplace_back("attach_sock_ops", t.sockops_ms);
    startup_ms.emplace_back("attach_ingress", t.ingress_ms);
    startup_ms.emplace_back("pin_maps", t.pin_ms);
    phase("bpf_total");
    // Edge-triggered: a bound slot's mechanism reads until EAGAIN.
    auto watch = [this](uint32_t id, const Slot& s) -> Status {
      for (int fd : {s.out.get(), s.in.get()})
        if (auto w = epoll_add(epoll_.get(), fd, EPOLLIN | EPOLLRDHUP | EPOLLET, slot_tag(id)); !w)
          return w;
      return ok();
    };
    auto p = SlotPool::create(*kernel_, opt_.max_conns, watch);
    if (!p) return p.error();
    slots_.emplace(p.take());
    return slots_->grow(kPoolStart);
  }();
  if (!slots_ok) return slots_ok;
  by_slot_.resize(opt_.max_conns);
  phase("slot_pool");

  rules.join();
  if (!rules_status) return rules_status;
  phase("fin_hold_rules_wait");

  // Raw sockets to reset connections as TCP would, and wake their writers.
  auto inject = Injector::open();
  if (!inject) return inject.error();
  inject_.emplace(inject.take());

  ring_ = ring_buffer__new(kernel_->events_fd(), &Daemon::on_ring_event, this, nullptr);
  if (!ring_) return sys_error("open the event ring buffer");

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  signal(SIGPIPE, SIG_IGN);
  signal_.reset(signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
  timer_.reset(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  itimerspec its{{0, kTickMs * 1000000}, {0, kTickMs * 1000000}};
  timerfd_settime(timer_.get(), 0, &its, nullptr);
  for (auto [fd, t] : {std::pair{ring_buffer__epoll_fd(ring_), kRing},
                       std::pair{signal_.get(), kSignal}, std::pair{timer_.get(), kTimer},
                       std::pair{control_.get(), kControl}, std::pair{fins_->fd(), kFins}})
    if (auto s = epoll_add(epoll_.get(), fd, EPOLLIN, tag(t)); !s) return s;
  if (metrics_)
    if (auto s = epoll_add(epoll_.get(), metrics_->fd(), EPOLLIN, tag(kMetrics)); !s) return s;
  // The configuration file's rules, before anyone is told hookerd is ready.
  if (!opt_.rules.empty())
    if (auto s = set_file_rules(opt_.rules, "at start"); !s) return s;
  // From here the kernel hears which mechanisms are deployed: handshakes
  // name them.
  return deployed_.connect(epoll_.get(), [](uint32_t i) { return tag(kMech, i); }, *kernel_);
}

// With --eager every mechanism the policy names is deployed now; otherwise
// each is only checked (its port free, its protocol in the kernel) and is
// deployed when the first connection needs it.
Status Daemon::prepare_mechanisms() {
  for (auto& r : opt_.redirect.rules())
    if (std::string why = check_rule(r, deployed_.config()); !why.empty())
      return Error{"--redirect " + r.str() + ": " + why, 0};
  for (const MechKind& k : mechanisms()) {
    bool named = false;
    for (auto& r : opt_.redirect.rules())
      for (uint8_t m : r.mechs) named |= m == k.id;
    if (!named) continue;
    auto s = opt_.eager ? deployed_.deploy(k, "at start (--eager)") : deployed_.check(k);
    if (!s) return s;
  }
  return ok();
}

Mechanism* Daemon::mechanism(uint8_t id) const {
  // HK_MECH_NONE: a kernel side that does not name one yet means udp.
  return deployed_.get(id == HK_MECH_NONE ? uint8_t{HK_MECH_UDP} : id);
}

void Daemon::want_writable(int fd, bool on) { deployed_.want_writable(fd, on); }

bool Daemon::expect_token(uint64_t token) {
  // The handshake's event may still be in the ring: read it first.
  consume_events();
  hk_token t;
  if (bpf_map_lookup_elem(kernel_->tokens_fd(), &token, &t) != 0) return false;
  if (t.state == HK_TOKEN_EMBRYONIC) {
    // The client's bytes came, so it is established on its side: its last
    // handshake ACK was lost, or is late. TCP would take the ACK from the
    // first data segment; none comes over TCP here.
    if (auto wire = kernel_->embryo_flow(token)) complete_handshake(*wire);
    return true;
  }
  return t.state == HK_TOKEN_LIVE;
}

void Daemon::log(std::string_view line, log::Level level) { log::write(level, line); }

Daemon::~Daemon() {
  // Let every held FIN through before the rules go.
  for (auto& c : by_slot_)
    if (c) release_fins(*c);
  fins_.reset();
  if (ring_) ring_buffer__free(ring_);
  kernel_.reset();  // detaches the programs: new connections stay plain TCP
  if (control_.valid()) unlink(opt_.control.c_str());
}

// ---- kernel events -------------------------------------------------------

void Daemon::consume_events() {
  // libbpf's ring buffer is not re-entrant: it moves past an event only once
  // its callback returned, so a nested call would handle that event (and
  // those after it) twice. Handlers that consume (on_datagram, for a token
  // it does not know) may run inside an event's handling, when on_bound
  // replays early datagrams: the outer call reads the rest.
  if (in_events_) return;
  in_events_ = true;
  ring_buffer__consume(ring_);
  in_events_ = false;
}

int Daemon::on_ring_event(void* self, void* data, size_t size) {
  if (size >= sizeof(hk_event)) static_cast<Daemon*>(self)->on_event(*static_cast<hk_event*>(data));
  return 0;
}

void Daemon::on_event(const hk_event& ev) {
  if (ev.type == HK_EV_BOUND) return on_bound(ev);
  if (ev.type == HK_EV_WRITER_WAITS) return on_writer_waits(ev.slot);
  if (ev.type == HK_EV_NEED_MECH) return on_need_mech(ev);
  if (ev.type == HK_EV_FELL_BACK) return on_fell_back(ev);
  if (ev.type == HK_EV_CONNECTING) {
    if (Mechanism* m = mechanism(ev.mech))
      m->prepare(remote_addr(ev.app, opt_.port), rule_opts(ev, ev.mech));
    return;
  }
  if (ev.type == HK_EV_BIND_FAILED) {
    uint32_t step = ev.why & 0xff, err = ev.why >> 8;
    const char* what = step == HK_BIND_LANES     ? "its slot has no lanes"
                       : step == HK_BIND_TOKEN   ? "its token could not go live"
                       : step == HK_BIND_SOCKHASH ? "the SOCKHASH refused the socket"
                                                  : "unknown step";
    log::conn("reset " + to_string(ev.app) + (ev.active ? " (client)" : " (server)") +
              ": the kernel could not bind it to hookerd: " + what +
              (err ? std::string(" (") + std::strerror(static_cast<int>(err)) + ")" : "") +
              "; the peer resets it");
    if (Mechanism* m = mechanism(ev.mech))
      m->refuse({ev.token, ev.peer_token, remote_addr(ev.app, ev.peer_port), {}, ev.mss,
                 ev.active != 0});
    return;
  }
  if (ev.slot >= by_slot_.size() || !by_slot_[ev.slot]) return;
  Conn& c = *by_slot_[ev.slot];
  if (ev.token != c.token) return;  // an event of a slot's previous life
  if (ev.type == HK_EV_SHUT_WR || ev.type == HK_EV_CLOSED) {
    if (!c.app_shut_wr) {
      c.app_shut_wr = true;
      // Every send() of the application returned before its shutdown or
      // close, and the lanes counted what each returned: pump() ends the
      // stream there.
      c.app_total = std::atomic_ref(c.lanes->sent).load(std::memory_order_acquire);
    }
  }
  if (ev.type == HK_EV_CLOSED) {
    c.app_gone = true;
    release_fins(c);
  }
  c.mech->on_app_readable();
  maybe_retire(c);
}

void Daemon::on_bound(const hk_event& ev) {
  Slot* s = slots_->get(ev.slot);
  if (!s || ev.slot >= by_slot_.size()) return;
  if (by_slot_[ev.slot]) retire(*by_slot_[ev.slot]);  // cannot happen: slots are recycled
  PeerInfo peer{ev.token, ev.peer_token, remote_addr(ev.app, ev.peer_port), {}, ev.mss,
                ev.active != 0};
  Mechanism* m = mechanism(ev.mech);
  if (!m) {
    // The kernel agreed on a mechanism this hookerd does not have (any
    // more: undeployed between the handshake and now). Nothing can carry
    // the bytes: both applications are reset as TCP would, the slot goes back.
    cnt_.conns_unknown_mech++;
    log::conn("reset " + to_string(ev.app) + ": it negotiated mechanism " +
              std::to_string(ev.mech) + ", which is not deployed");
    Conn c(static_cast<AppSide&>(*this));
    c.app = ev.app;
    c.snd_nxt = ev.snd_nxt;
    c.rcv_nxt = ev.rcv_nxt;
    cnt_.rst_injected += inject_->reset(c);
    bpf_map_delete_elem(kernel_->tokens_fd(), &ev.token);
    if (auto st = slots_->recycle(ev.slot, false); !st)
      log::error("slot " + std::to_string(ev.slot) + " lost: " + st.error().message());
    return;
  }
  auto c = std::make_unique<Conn>(static_cast<AppSide&>(*this));
  c->slot = ev.slot;
  c->app = ev.app;
  c->token = ev.token;
  c->peer_token = ev.peer_token;
  c->active = ev.active;
  c->peer = peer.peer;
  c->in_fd = s->in.get();
  c->out_fd = s->out.get();
  c->lanes = kernel_->lanes(ev.slot);
  c->snd_nxt = ev.snd_nxt;
  c->rcv_nxt = ev.rcv_nxt;
  c->consumed = kernel_->consumed(ev.slot);
  c->consumed_base = c->app_reads();
  if (auto st = slots_->bind_inbound(ev.slot, ev.app); !st) {
    log::conn("refused " + to_string(ev.app) + ": " + st.error().message());
    m->refuse(peer);
    return;
  }
  c->mech_id = ev.mech == HK_MECH_NONE ? uint8_t{HK_MECH_UDP} : ev.mech;
  peer.opts = rule_opts(ev, c->mech_id);
  c->mech = m->open(peer, *c);
  Conn* cp = c.get();
  by_token_[cp->token] = cp;
  by_flow_[wire_flow(cp->app)] = cp;
  if (auto e = early_fins_.find(wire_flow(cp->app)); e != early_fins_.end()) {
    cp->held_fins = std::move(e->second);
    early_fins_.erase(e);
  }
  by_slot_[ev.slot] = std::move(c);
  cnt_.conns_moved++;
  const MechKind* kind = find_mechanism(cp->mech_id);
  log::conn("moved " + to_string(cp->app) + " onto " +
            (kind ? std::string(kind->name) : std::to_string(cp->mech_id)) +
            (ev.active ? " (client)" : " (server)"));
  // Early datagrams, then the first bytes. A RESET among them retires the
  // connection: whatever follows passes over it.
  cp->mech->start();
  // The tick refills the pool; a burst of connections between two ticks
  // refills it sooner, after an eighth of it went (reading the kernel's
  // counters costs three system calls: not at every connection).
  if (++binds_unchecked_ >= pool_ready_ / 8) keep_pool_full();
}

// The options for `mech` of the rule that moved ev's connection, as this host
// has it now: a rule deleted since the handshake leaves the mechanism's
// defaults; a file rule's are the one in force, if no reload came since.
std::string Daemon::rule_opts(const hk_event& ev, uint8_t mech) const {
  uint16_t server_port = ev.active ? ev.app.rport : ev.app.lport;
  if (ev.rule) {
    if (const MatchRule* r = file_rule_of(ev.rule)) return r->action.opt(mech);
  } else if (const PortRule* r = opt_.redirect.find(server_port)) {
    return r->opt(mech);
  }
  return "";
}

// A handshake that named a mechanism ended in plain TCP: said in one line.
void Daemon::on_fell_back(const hk_event& ev) {
  const MechKind* k = find_mechanism(ev.mech);
  std::string mech = k ? std::string(k->name) : "mechanism " + std::to_string(ev.mech);
  const char* why = ev.why == HK_FB_PEER_NO_HOOKER
                        ? "the server's SYN-ACK has no Hooker option (no hookerd there, or no "
                          "rule for the port)"
                    : ev.why == HK_FB_PEER_REFUSED ? "the server refused it"
                    : ev.why == HK_FB_NOT_ACCEPTED ? "this server's rule does not accept it"
                                                   : "unknown reason";
  log::conn("refused " + to_string(ev.app) + (ev.active ? " (client)" : " (server)") + ": " +
            mech + ": " + why + "; it stays TCP");
}

// ---- the application side's requests --------------------------------------

void Daemon::wait(Conn& c, AppWait why) {
  if (why == kWaitAppRoom) cnt_.delivery_retries++;
  waiting_[why].add(c);
}

void Daemon::abort(Conn& c, std::string_view why) {
  if (c.retired) return;  // reset once, by the first cause
  log::conn("reset " + to_string(c.app) + ": " + std::string(why));
  c.inbound_dead = true;  // not one byte more reaches the application
  cnt_.rst_injected += inject_->reset(c);
  retire(c);
}

void Daemon::wake_at(Conn& c, Time t) {
  if (c.retired || t >= c.scheduled) return;
  c.scheduled = t;
  deadlines_.push({t, c.token});
}

void Daemon::run_deadlines() {
  Time now = Clock::now();
  while (!deadlines_.empty() && deadlines_.top().first <= now) {
    auto [t, token] = deadlines_.top();
    deadlines_.pop();
    auto it = by_token_.find(token);
    if (it == by_token_.end() || it->second->scheduled != t) continue;  // stale
    Conn& c = *it->second;
    c.scheduled = kNever;
    c.mech->on_deadline(now);
  }
  deployed_.for_each([now](const MechKind&, Mechanism& m) {
    if (m.deadline() <= now) m.on_deadline(now);
  });
}

int Daemon::next_deadline_ms() const {
  Time next = deadlines_.empty() ? kNever : deadlines_.top().first;
  deployed_.for_each([&next](const MechKind&, Mechanism& m) { next = std::min(next, m.deadline()); });
  if (next == kNever) return -1;
  auto left = next - Clock::now();
  if (left <= Clock::duration::zero()) return 0;
  return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
}

// ---- FINs and the end of a connection ------------------------------------

bool Daemon::on_fin(const hk_flow& local, uint32_t id, bool rst) {
  consume_events();  // a connection bound a moment ago
  auto it = by_flow_.find(local);
  if (it == by_flow_.end() && complete_handshake(local)) it = by_flow_.find(local);
  if (rst) return true;  // an abortive close is never held
  if (it == by_flow_.end()) {
    if (kernel_->handshaking(local)) {
      // Our SYN-ACK accepted it, the client's last ACK was lost, and our
      // own ACK for it did not bring the connection up: this FIN completes
      // the handshake, after bytes that crossed already. It waits for the
      // connection (TCP's SYN-ACK retry brings it up without the FIN).
      early_fins_[local].push_back(id);
      cnt_.fins_before_bind++;
      return false;
    }
    // Bound since the first look? Its entry goes only after its event.
    consume_events();
    it = by_flow_.find(local);
    if (it == by_flow_.end()) return true;  // not moved: plain TCP's FIN
  }
  Conn& c = *it->second;
  if (c.peer_done || c.app_gone || c.inbound_dead) {
    drop_guard(c);
    return true;
  }
  c.held_fins.push_back(id);
  return false;
}

// A client's FIN, RST or bytes came for a handshake still completing here:
// the ACK that was lost is given to our socket, once, so the application
// gets the connection (and with it the bytes, the EOF or the reset) now,
// not at the SYN-ACK's retry, nor never after a reset. True if the
// connection is bound now.
bool Daemon::complete_handshake(const hk_flow& wire) {
  auto e = kernel_->embryo(wire);
  if (!e || !acked_embryos_.insert(e->token).second) return false;
  if (!inject_->complete_handshake(wire, *e)) {
    log::conn("cannot complete the handshake of " + to_string(wire) + ": " + std::strerror(errno));
    return false;
  }
  cnt_.handshakes_completed++;
  consume_events();  // its BOUND event, if it came up
  return by_flow_.count(wire) != 0;
}

void Daemon::release_fins(Conn& c) {
  if (c.held_fins.empty()) return;
  for (uint32_t id : c.held_fins) fins_->release(id);
  c.held_fins.clear();
  drop_guard(c);  // the peer's FIN acknowledges ours
}

void Daemon::drop_guard(const Conn& c) {
  kernel_->del_fin_guard(wire_flow(c.app));
}

bool Daemon::maybe_retire(Conn& c) {
  // Gone when the application closed and every byte it wrote left.
  if (c.retired || !c.app_gone || !c.sent_whole) return false;
  retire(c);
  return true;
}

// The connection leaves the kernel and every table now; its memory only at
// the end of the loop turn (reap), so callers up the stack and lists being
// walked may still hold it: they see `retired` and pass over it. Its slot is
// offered again at once, and may be bound to a new connection in the same
// turn: by_slot_ then holds the new one, the graveyard the old.
void Daemon::retire(Conn& c) {
  if (c.retired) return;
  c.retired = true;
  StreamStatus ms = c.mech->status();  // its bytes stay in the counters
  carried_[c.mech_id].sent += ms.bytes_out;
  carried_[c.mech_id].received += ms.bytes_in;
  c.mech->retire();
  uint32_t slot = c.slot;
  release_fins(c);
  drop_guard(c);
  // The pair stays watched (SlotPool::Watch): its next connection's
  // events find by_slot_ empty or the next connection. Only the watch
  // for room a writer asked for goes.
  if (c.watching_room) watch_slot_room(c, false);
  // The kernel removed the token with the socket's close (on_state), before
  // its CLOSED event set app_gone; any other end removes it here.
  if (!c.app_gone) bpf_map_delete_elem(kernel_->tokens_fd(), &c.token);
  by_token_.erase(c.token);
  by_flow_.erase(wire_flow(c.app));
  cnt_.conns_closed++;
  graveyard_.push_back(std::move(by_slot_[slot]));
  // A send the kernel refused into the slot (the application had gone)
  // leaves its sk_msg verdict stuck at drop for every later send on that
  // socket (tcp_bpf keeps a dropped verdict): such a pair is not reused,
  // nor, to be safe, one whose connection was aborted (both set
  // inbound_dead).
  if (auto s = slots_->recycle(slot, !c.inbound_dead); !s)
    log::error("slot " + std::to_string(slot) + " lost: " + s.error().message());
}

// The end of a loop turn: nothing holds a connection retired in it any more
// but the lists it waited in. They forget it, then it is freed.
void Daemon::reap() {
  deployed_.for_each([](const MechKind&, Mechanism& m) { m.reap(); });
  if (!graveyard_.empty()) {
    std::bitset<kAppWaitKinds> in;
    for (auto& c : graveyard_) in |= c->waiting;
    for (auto& l : waiting_)
      if (in[l.why()]) l.purge();
    graveyard_.clear();
  }
  deployed_.reap();  // undeployed mechanisms, after the connections they carried
}

Status Daemon::run() {
  epoll_event evs[64];
  while (!stop_) {
    int n = epoll_wait(epoll_.get(), evs, 64, next_deadline_ms());
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("epoll_wait");
    }
    // Kernel events first: a connection's BOUND must precede its data.
    consume_events();
    for (int i = 0; i < n; i++) {
      uint64_t t = evs[i].data.u64 >> 32;
      uint32_t idx = static_cast<uint32_t>(evs[i].data.u64);
      switch (t) {
        case kRing: break;
        case kMech:
          if (auto [fd, m] = deployed_.polled(idx); m) {
            if (evs[i].events & EPOLLOUT) m->on_writable(fd);
            if (evs[i].events & EPOLLIN) m->on_readable(fd);
          }
          break;
        case kSlot:
          if ((evs[i].events & EPOLLOUT) && idx < by_slot_.size() && by_slot_[idx])
            on_slot_room(*by_slot_[idx]);
          if (idx < by_slot_.size() && by_slot_[idx]) by_slot_[idx]->mech->on_app_readable();
          if (idx < by_slot_.size() && by_slot_[idx]) maybe_retire(*by_slot_[idx]);
          break;
        case kSignal: stop_ = true; break;
        case kTimer: on_timer(); break;
        case kControl: on_control(); break;
        case kMetrics:
          metrics_->on_ready([this] { return prometheus_text(stats_json()); });
          break;
        case kFins:
          if (auto s = fins_->on_readable(); !s)
            log::error(s.error().message());
          break;
      }
    }
    run_deadlines();
    // What waited for room in the mechanisms' queues, and what they queued.
    deployed_.for_each([](const MechKind&, Mechanism& m) { m.flush(); });
    reap();
  }
  return ok();
}

}  // namespace hooker
