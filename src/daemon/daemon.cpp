#include "daemon/daemon.h"

#include "daemon/tuning.h"

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
enum Tag : uint64_t { kRing = 1, kUdp, kSlot, kSignal, kTimer, kControl, kFins };
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
                         [this](const hk_flow& fl, uint32_t id) { return on_fin(fl, id); });
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
  set_libbpf_verbose(opt_.verbose);
  // The UDP port first: if it is taken nothing else is touched.
  auto udp = UdpTransport::open(opt_.port);
  if (!udp) return udp.error();
  udp_.emplace(udp.take());

  // The control socket next: a second hookerd on the same path must fail
  // before attaching anything.
  std::filesystem::create_directories(std::filesystem::path(opt_.control).parent_path());
  control_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (opt_.control.size() >= sizeof(sa.sun_path))
    return Error{"control socket path too long: " + opt_.control, 0};
  std::strncpy(sa.sun_path, opt_.control.c_str(), sizeof(sa.sun_path) - 1);
  if (connect(control_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0)
    return Error{"another hookerd answers on " + opt_.control + ": give this one --control PATH",
                 0};
  control_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  unlink(opt_.control.c_str());  // stale: nobody answered
  if (bind(control_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) < 0 ||
      listen(control_.get(), 16) < 0)
    return sys_error("listen on control socket " + opt_.control);
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
      fprintf(stderr, "hookerd: mounted a BPF filesystem at %s (there was none)\n",
              bpffs_.mounted_at().c_str());
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
    auto p = SlotPool::create(*kernel_, opt_.max_conns);
    if (!p) return p.error();
    slots_.emplace(p.take());
    // The waker parses the kernel's BTF (10-20 ms): it loads while hookerd
    // already runs; the first writer to wake waits for it. Its thread starts
    // with every signal blocked (threads inherit the mask): a SIGTERM it
    // took would end hookerd at once instead of reaching run's signalfd.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    waker_loading_ = std::jthread([this, fd = kernel_->sk_state_fd()] {
      waker_loaded_.emplace(Waker::load(fd, opt_.max_conns));
      waker_done_.store(true, std::memory_order_release);
    });
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return slots_->grow(kPoolStart);
  }();
  if (!slots_ok) return slots_ok;
  by_slot_.resize(opt_.max_conns);
  phase("slot_pool");

  rules.join();
  if (!rules_status) return rules_status;
  phase("fin_hold_rules_wait");

  // Raw sockets to reset connections as TCP would (see inject_rst).
  raw4_.reset(socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW));
  raw6_.reset(socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW));
  if (!raw4_.valid() || !raw6_.valid()) return sys_error("open raw sockets for TCP resets");

  ring_ = ring_buffer__new(kernel_->events_fd(), &Daemon::on_ring_event, this, nullptr);
  if (!ring_) return sys_error("open the event ring buffer");

  epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
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
                       std::pair{udp_->fd(), kUdp}, std::pair{signal_.get(), kSignal},
                       std::pair{timer_.get(), kTimer}, std::pair{control_.get(), kControl},
                       std::pair{fins_->fd(), kFins}})
    if (auto s = epoll_add(epoll_.get(), fd, EPOLLIN, tag(t)); !s) return s;
  return ok();
}

Daemon::~Daemon() {
  if (waker_loading_.joinable()) waker_loading_.join();  // it reads kernel_'s maps
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
  if (ev.type == HK_EV_BIND_FAILED) {
    send_reset(ev.peer_token, remote_addr(ev.app, ev.peer_port));
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
  pump(c);
  maybe_retire(c);
}

void Daemon::on_bound(const hk_event& ev) {
  Slot* s = slots_->get(ev.slot);
  if (!s || ev.slot >= by_slot_.size()) return;
  if (by_slot_[ev.slot]) retire(*by_slot_[ev.slot]);  // cannot happen: slots are recycled
  auto c = std::make_unique<Conn>();
  c->slot = ev.slot;
  c->app = ev.app;
  c->token = ev.token;
  c->peer_token = ev.peer_token;
  c->cookie = ev.cookie;
  c->active = ev.active;
  c->peer = remote_addr(ev.app, ev.peer_port);
  c->in_fd = s->in.get();
  c->out_fd = s->out.get();
  c->lanes = kernel_->lanes(ev.slot);
  c->snd_nxt = ev.snd_nxt;
  c->rcv_nxt = ev.rcv_nxt;
  c->consumed_base = app_reads(ev.slot);
  if (auto st = slots_->bind_inbound(ev.slot, ev.app); !st) {
    fprintf(stderr, "hookerd: %s\n", st.error().message().c_str());
    send_reset(ev.peer_token, c->peer);
    return;
  }
  Conn* cp = c.get();
  by_token_[cp->token] = cp;
  by_flow_[wire_flow(cp->app)] = cp;
  by_slot_[ev.slot] = std::move(c);
  cnt_.conns_moved++;
  for (int fd : {cp->out_fd, cp->in_fd})
    (void)epoll_add(epoll_.get(), fd, EPOLLIN | EPOLLRDHUP | EPOLLET, tag(kSlot, ev.slot));
  if (opt_.verbose) fprintf(stderr, "hookerd: moved %s\n", to_string(cp->app).c_str());
  // Datagrams that beat the handshake to us. A RESET among them retires
  // the connection: whatever follows, pump() included, passes over it.
  if (auto it = stash_.find(cp->token); it != stash_.end()) {
    auto early = std::move(it->second);
    stash_.erase(it);
    for (auto& e : early) {
      stash_bytes_ -= e.d.size();
      on_datagram(e.from, e.d);
    }
  }
  pump(*cp);
  keep_pool_full();
}

// ---- the UDP queue -------------------------------------------------------

void Daemon::flush() {
  auto r = udp_->flush();
  if (!r) {
    fprintf(stderr, "hookerd: %s\n", r.error().message().c_str());
    return;
  }
  if (!*r == tx_blocked_) return;  // *r: everything left
  // Blocked: wait for EPOLLOUT; unblocked: stop asking for it.
  tx_blocked_ = !*r;
  epoll_event e{};
  e.events = tx_blocked_ ? EPOLLIN | EPOLLOUT : EPOLLIN;
  e.data.u64 = tag(kUdp);
  epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, udp_->fd(), &e);
}

// ---- wire -> application -------------------------------------------------

uint32_t Daemon::window() const {
  // Every connection may fill its window at once; together they must fit
  // in the UDP receive buffer, or the kernel drops datagrams.
  uint64_t n = std::max<size_t>(1, by_token_.size());
  return static_cast<uint32_t>(std::clamp<uint64_t>(kRxBudget / n, kInitialWindow, kMaxWindow));
}

void Daemon::on_udp_readable() {
  for (;;) {
    auto r = udp_->receive(
        [this](const sockaddr_in6& from, std::span<const std::byte> d) { on_datagram(from, d); });
    if (!r) {
      fprintf(stderr, "hookerd: %s\n", r.error().message().c_str());
      break;
    }
    if (*r < UdpTransport::kRxMsgs) break;  // drained
  }
  // One write per connection per batch into its application socket, then
  // an acknowledgement, so a sender waiting for credit never waits on a
  // threshold.
  touched_.drain([this](Conn& c) {
    deliver(c);
    if (ack_due(c, 1)) ack(c);  // ack() passes over a connection deliver() retired
  });
}

static bool same_host(const sockaddr_in6& a, const sockaddr_in6& b) {
  return std::memcmp(&a.sin6_addr, &b.sin6_addr, sizeof(a.sin6_addr)) == 0;
}

void Daemon::on_datagram(const sockaddr_in6& from, std::span<const std::byte> d) {
  auto p = wire::parse(d);
  if (!p.frame) {
    cnt_.rx_malformed++;
    return;
  }
  const wire::Frame& f = *p.frame;
  auto it = by_token_.find(f.token);
  if (it == by_token_.end()) {
    // The handshake's event may still be in the ring: read it first.
    consume_events();
    it = by_token_.find(f.token);
  }
  if (it == by_token_.end()) {
    hk_token t;
    // Accepted in a SYN-ACK whose final ACK has not arrived yet, or just
    // established on another CPU, its event not yet in the ring: keep the
    // datagram until the connection is bound (a lost one would reset it).
    if (bpf_map_lookup_elem(kernel_->tokens_fd(), &f.token, &t) == 0 &&
        (t.state == HK_TOKEN_EMBRYONIC || t.state == HK_TOKEN_LIVE) &&
        stash_bytes_ + d.size() <= kStashLimit) {
      stash_[f.token].push_back({from, {d.begin(), d.end()}});
      stash_bytes_ += d.size();
      cnt_.rx_stashed++;
    } else {
      cnt_.rx_unknown_token++;
    }
    return;
  }
  Conn& c = *it->second;
  if (!same_host(from, c.peer)) {
    cnt_.rx_wrong_source++;
    return;
  }
  switch (f.type) {
    case HK_WIRE_DATA: {
      if (c.inbound_dead) {
        cnt_.rx_after_close++;
        break;
      }
      auto a = c.in.add(f.offset, f.payload);
      if (a == Reassembly::Added::kDuplicate) cnt_.rx_duplicate++;
      if (a == Reassembly::Added::kBuffered) cnt_.rx_out_of_order++;
      if (a == Reassembly::Added::kBeyondWindow) cnt_.rx_beyond_window++;
      touched_.add(c);  // delivered once the batch is read
      break;
    }
    case HK_WIRE_ACK: {
      bool progress = false;
      if (f.offset > c.peer_acked && f.offset <= c.sent) {
        c.peer_acked = f.offset;
        progress = true;
      }
      if ((f.flags & HK_WIRE_F_END_SEEN) && !c.end_acked) c.end_acked = progress = true;
      if (f.offset + f.window > c.send_limit) {
        c.send_limit = f.offset + f.window;
        progress = true;
      }
      if (f.flags & HK_WIRE_F_REPLY) {
        // The answer to a probe sent when everything below probe_offset had
        // long left: what the peer still lacks was lost.
        if (c.probes > 0 && c.peer_acked < c.probe_offset) {
          cnt_.resets_lost_datagram++;
          return reset(c, "a datagram was lost (the peer's answer to a probe lacks it)", true);
        }
        progress = true;  // alive, merely slow to read
      }
      if (progress) {
        c.progress_at = Clock::now();
        c.probes = 0;
      }
      if (f.flags & HK_WIRE_F_PROBE) ack(c, HK_WIRE_F_REPLY);
      pump(c);
      break;
    }
    case HK_WIRE_END:
      c.peer_end = f.offset;
      touched_.add(c);  // acknowledged (END_SEEN) with the batch
      break;
    case HK_WIRE_RESET:
      cnt_.resets_received++;
      reset(c, "the peer reset the connection", false);
      break;
  }
}

uint64_t Daemon::app_reads(uint32_t slot) const {
  uint64_t n = 0;
  bpf_map_lookup_elem(kernel_->consumed_fd(), &slot, &n);
  return n;
}

void Daemon::deliver(Conn& c) {
  if (c.retired) return;
  while (!c.inbound_dead && !c.in.ready().empty()) {
    // What the application has not read yet stays bounded: redirected
    // bytes are not limited by its receive buffer.
    uint64_t unread = c.in.delivered() - (app_reads(c.slot) - c.consumed_base);
    if (unread >= kAppQueue) {
      retry_.add(c);
      break;
    }
    auto r = c.in.ready();
    size_t len = std::min<uint64_t>(r.size(), kAppQueue - unread);
    ssize_t n = send(c.in_fd, r.data(), len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      c.in.consumed(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == ENOMEM || errno == ENOBUFS || errno == EINTR)) {
      // The application's receive queue is full: try again on the next tick.
      retry_.add(c);
      cnt_.delivery_retries++;
      return;
    }
    // EACCES/EPIPE: the application socket has left; nobody can read more.
    c.inbound_dead = true;
  }
  if (ack_due(c, window() / 4)) ack(c);
  if (c.peer_done()) {
    if (ack_due(c, 1)) ack(c);
    release_fins(c);
  }
  maybe_retire(c);
}

// The limit a new ACK would grant: the receiver holds at most window()
// bytes, whether out of order or waiting for the application.
static uint64_t grantable(const Conn& c, uint64_t w) {
  uint64_t held = c.in.buffered();
  return std::max(c.in.limit(), c.in.next() + (w > held ? w - held : 0));
}

bool Daemon::ack_due(const Conn& c, uint64_t threshold) const {
  bool end_news = c.peer_end && c.in.next() >= *c.peer_end && c.acked < *c.peer_end;
  return end_news || c.in.next() >= c.acked + threshold ||
         grantable(c, window()) >= c.acked_limit + threshold;
}

void Daemon::ack(Conn& c, uint8_t flags) {
  if (c.retired) return;
  if (udp_->room() == 0) flush();
  if (udp_->room() == 0) {
    // Never dropped: a lost window update would stall the sender for good.
    c.ack_pending = true;
    ack_waiters_.add(c);
    return;
  }
  c.ack_pending = false;
  uint64_t limit = grantable(c, window());
  c.in.raise_limit(limit);
  if (c.peer_end && c.in.next() >= *c.peer_end) flags |= HK_WIRE_F_END_SEEN;
  uint64_t next = c.in.next();
  udp_->queue({HK_WIRE_ACK, HK_MECH_UDP, c.peer_token, next,
               static_cast<uint32_t>(std::min<uint64_t>(limit - next, UINT32_MAX)), {}, flags},
              c.peer);
  c.acked = next;
  c.acked_limit = limit;
}

// ---- FINs and the end of a connection ------------------------------------

bool Daemon::on_fin(const hk_flow& local, uint32_t id) {
  consume_events();  // a connection bound a moment ago
  auto it = by_flow_.find(local);
  if (it == by_flow_.end()) return true;  // not moved: plain TCP's FIN
  Conn& c = *it->second;
  if (c.peer_done() || c.app_gone || c.inbound_dead) {
    drop_guard(c);
    return true;
  }
  c.held_fins.push_back(id);
  return false;
}

void Daemon::release_fins(Conn& c) {
  if (c.held_fins.empty()) return;
  for (uint32_t id : c.held_fins) fins_->release(id);
  c.held_fins.clear();
  drop_guard(c);  // the peer's FIN acknowledges ours
}

void Daemon::drop_guard(const Conn& c) {
  hk_flow w = wire_flow(c.app);
  bpf_map_delete_elem(kernel_->fin_guards_fd(), &w);
}

bool Daemon::maybe_retire(Conn& c) {
  // Gone when the application closed and every byte it wrote left.
  if (c.retired || !c.app_gone || !c.end_sent) return false;
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
  uint32_t slot = c.slot;
  release_fins(c);
  drop_guard(c);
  epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.in_fd, nullptr);
  epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.out_fd, nullptr);
  bpf_map_delete_elem(kernel_->tokens_fd(), &c.token);
  by_token_.erase(c.token);
  by_flow_.erase(wire_flow(c.app));
  cnt_.conns_closed++;
  graveyard_.push_back(std::move(by_slot_[slot]));
  if (auto s = slots_->recycle(slot); !s)
    fprintf(stderr, "hookerd: slot %u lost: %s\n", slot, s.error().message().c_str());
}

// The end of a loop turn: nothing holds a connection retired in it any more
// but the lists it waited in. They forget it, then it is freed.
void Daemon::reap() {
  if (graveyard_.empty()) return;
  std::bitset<kWaitKinds> in;
  for (auto& c : graveyard_) in |= c->waiting;
  for (WaitList& l : waiting_)
    if (in[l.why()]) l.purge();
  graveyard_.clear();
}

Status Daemon::run() {
  epoll_event evs[64];
  while (!stop_) {
    int n = epoll_wait(epoll_.get(), evs, 64, -1);
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
        case kUdp:
          if (evs[i].events & EPOLLOUT) flush();
          if (evs[i].events & EPOLLIN) on_udp_readable();
          break;
        case kSlot:
          if ((evs[i].events & EPOLLOUT) && idx < by_slot_.size() && by_slot_[idx])
            on_slot_room(*by_slot_[idx]);
          if (idx < by_slot_.size() && by_slot_[idx]) pump(*by_slot_[idx]);
          if (idx < by_slot_.size() && by_slot_[idx]) maybe_retire(*by_slot_[idx]);
          break;
        case kSignal: stop_ = true; break;
        case kTimer: on_timer(); break;
        case kControl: on_control(); break;
        case kFins:
          if (auto s = fins_->on_readable(); !s)
            fprintf(stderr, "hookerd: %s\n", s.error().message().c_str());
          break;
      }
    }
    flush();
    // RESETs and ACKs owed first: they end or unblock the peers' senders.
    if (!tx_blocked_ && !resets_owed_.empty()) {
      auto owed = std::move(resets_owed_);
      resets_owed_.clear();
      for (auto& [tok, to] : owed) send_reset(tok, to);
    }
    if (!tx_blocked_ && !ack_waiters_.empty()) {
      ack_waiters_.drain([this](Conn& c) {
        if (c.ack_pending) ack(c);
      });
      flush();
    }
    // Connections that waited for room in the UDP queue.
    while (!tx_blocked_ && !tx_waiters_.empty()) {
      size_t waited = tx_waiters_.size();
      tx_waiters_.drain([this](Conn& c) {
        pump(c);
        maybe_retire(c);
      });
      flush();
      if (tx_waiters_.size() >= waited) break;
    }
    wake_writers();
    reap();
  }
  if (fatal_) return *fatal_;
  return ok();
}

}  // namespace hooker
