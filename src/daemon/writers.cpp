// Application writers that the slow lane refused (hk_lanes.writer_waits).
// A non-blocking writer that got EAGAIN waits for EPOLLOUT on its own
// socket, which has room all along: its bytes were refused by the slot's
// `out` socket. So hookerd watches `out` for room on the writer's behalf
// and then wakes the writer's socket (bpf/waker.bpf.c), once per wait.
#include <sys/epoll.h>

#include <atomic>
#include <chrono>
#include <cstdio>

#include "daemon/daemon.h"

namespace hooker {

void Daemon::on_writer_waits(uint32_t slot) {
  if (slot < by_slot_.size() && by_slot_[slot]) watch_slot_room(*by_slot_[slot], true);
}

void Daemon::watch_slot_room(Conn& c, bool on) {
  if (c.watching_room == on) return;
  c.watching_room = on;
  // Edge-triggered like the rest; a MOD that asks for EPOLLOUT while `out`
  // already has room reports it at once.
  epoll_event e{};
  e.events = EPOLLIN | EPOLLRDHUP | EPOLLET | (on ? uint32_t{EPOLLOUT} : 0u);
  e.data.u64 = slot_tag(c.slot);
  epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.out_fd, &e);
}

void Daemon::on_slot_room(Conn& c) {
  if (!c.watching_room) return;
  watch_slot_room(c, false);
  // Cleared before the wake: a writer refused again after this sets it
  // again, and its event arms the watch again.
  if (std::atomic_ref(c.lanes->writer_waits).exchange(0, std::memory_order_acq_rel))
    writers_to_wake_.push_back(c.token);
}

bool Daemon::waker_ready(bool wait) {
  if (waker_) return true;
  if (!waker_loading_.joinable()) return false;  // it failed: run() is ending
  if (!wait && !waker_done_.load(std::memory_order_acquire)) return false;
  waker_loading_.join();
  auto& w = *waker_loaded_;
  if (!w) {
    // Without it a non-blocking writer could wait for ever: stop loudly.
    fatal_ = w.error();
    stop_ = true;
    return false;
  }
  waker_ = w.take();
  return true;
}

void Daemon::wake_writers() {
  if (writers_to_wake_.empty() || !waker_ready(true)) return;
  auto r = waker_->wake(writers_to_wake_);
  if (!r) {
    fprintf(stderr, "hookerd: %s\n", r.error().message().c_str());
    cnt_.writers_not_woken += writers_to_wake_.size();
  } else {
    cnt_.writers_woken += writers_to_wake_.size() - *r;
    cnt_.writers_not_woken += *r;  // their socket closed meanwhile
  }
  writers_to_wake_.clear();
}

void Daemon::check_waiting_writers() {
  // A wait whose event was lost (ring buffer full), or that began while
  // hookerd was clearing the last one.
  for (auto& [tok, c] : by_token_)
    if (!c->watching_room &&
        std::atomic_ref(c->lanes->writer_waits).load(std::memory_order_acquire))
      watch_slot_room(*c, true);
}

}  // namespace hooker
