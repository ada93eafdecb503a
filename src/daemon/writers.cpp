// Application writers that the slow lane refused (hk_lanes.writer_waits).
// A non-blocking writer that got EAGAIN waits for EPOLLOUT on its own
// socket, which has room all along: its bytes were refused by the slot's
// `out` socket. So hookerd watches `out` for room on the writer's behalf
// and then wakes the writer's socket with an injected ACK (app/inject.h),
// once per wait.
#include <sys/epoll.h>

#include <atomic>

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
  if (!std::atomic_ref(c.lanes->writer_waits).exchange(0, std::memory_order_acq_rel)) return;
  if (inject_->wake_writer(c)) {
    cnt_.wake_acks_sent++;
    return;
  }
  cnt_.wake_acks_failed++;
  // Flagged again: check_waiting_writers tries once more.
  std::atomic_ref(c.lanes->writer_waits).store(1, std::memory_order_release);
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
