// The periodic tick: delivery retries, the lanes, the slot pool, stale
// kernel state. (A mechanism's timers are per connection: run_deadlines.)
#include <bpf/bpf.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "daemon/daemon.h"
#include "daemon/tuning.h"

namespace hooker {

// ---- housekeeping --------------------------------------------------------

void Daemon::keep_pool_full() {
  binds_unchecked_ = 0;
  uint64_t no_slot = kernel_->counter(HK_CNT_NO_SLOT);
  if (no_slot > no_slot_seen_) {
    no_slot_seen_ = no_slot;
    pool_ready_ = std::min<uint64_t>({pool_ready_ * 2, kPoolReadyMax, slots_->max()});
  }
  uint64_t free = slots_->offered() - kernel_->counter(HK_CNT_SLOT_TAKEN) +
                  kernel_->counter(HK_CNT_SLOT_RETURNED);
  if (free >= pool_ready_ || slots_->created() >= slots_->max()) return;
  auto n = static_cast<uint32_t>(std::min<uint64_t>(pool_ready_ - free, kPoolBatch));
  auto s = slots_->grow(n);
  // Said once per kind of failure, not at every tick (EMFILE would repeat).
  if (!s && s.error().err != pool_error_)
    log::error("cannot grow the slot pool: " + s.error().message());
  pool_error_ = s ? 0 : s.error().err;
}

void Daemon::gc_embryonic() {
  // A SYN-ACK that accepted Hooker reserved a slot; if its handshake never
  // completed (a scan, a SYN flood) the slot goes back to the pool.
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t now = static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
  uint64_t key, next;
  std::vector<std::pair<uint64_t, uint32_t>> dead;
  int fd = kernel_->tokens_fd();
  for (int r = bpf_map_get_next_key(fd, nullptr, &key); r == 0;
       r = bpf_map_get_next_key(fd, &key, &next), key = next) {
    hk_token t;
    if (bpf_map_lookup_elem(fd, &key, &t) == 0 && t.state == HK_TOKEN_EMBRYONIC &&
        older_than(now, t.created_ns, kEmbryonicNs))
      dead.emplace_back(key, t.slot);
  }
  for (auto [tok, slot] : dead)
    if (bpf_map_delete_elem(fd, &tok) == 0) (void)slots_->offer(slot);
  // FINs held for a handshake that is gone: plain TCP's now. A connection
  // bound a moment ago takes its own: its entry went only after its event,
  // which the events read after the look find.
  std::vector<hk_flow> gone_fins;
  for (auto& [flow, ids] : early_fins_)
    if (!kernel_->handshaking(flow)) gone_fins.push_back(flow);
  consume_events();
  for (const hk_flow& flow : gone_fins) {
    auto e = early_fins_.find(flow);
    if (e == early_fins_.end()) continue;  // its connection took them
    for (uint32_t id : e->second) fins_->release(id);
    early_fins_.erase(e);
  }
  std::erase_if(acked_embryos_, [&](uint64_t token) {
    hk_token t;
    return bpf_map_lookup_elem(fd, &token, &t) != 0 || t.state != HK_TOKEN_EMBRYONIC;
  });
  // Early datagrams of a handshake that is gone: nobody will claim them.
  deployed_.for_each([](const MechKind&, Mechanism& m) { m.housekeeping(); });

  // A FIN-ACK guard older than a minute: the peer keeps its half open. Let
  // the ACK through (the reader risks one EAGAIN) rather than have TCP give
  // up on the unacknowledged FIN.
  hk_flow fk, fnext;
  std::vector<hk_flow> stale;
  int gfd = kernel_->fin_guards_fd();
  for (int r = bpf_map_get_next_key(gfd, nullptr, &fk); r == 0;
       r = bpf_map_get_next_key(gfd, &fk, &fnext), fk = fnext) {
    hk_fin_guard g;
    if (bpf_map_lookup_elem(gfd, &fk, &g) == 0 && older_than(now, g.since_ns, kGuardNs))
      stale.push_back(fk);
  }
  for (auto& k : stale) kernel_->del_fin_guard(k);
  gc_unreachable();
}

void Daemon::on_timer() {
  uint64_t expirations;
  (void)!read(timer_.get(), &expirations, sizeof(expirations));
  ticks_++;
  // The application read: the mechanism hands over the rest (and
  // acknowledges if its window opened).
  waiting_[kWaitAppRoom].drain([](Conn& c) { c.mech->on_app_room(); });
  waiting_[kWaitLanding].drain([this](Conn& c) {
    c.mech->on_app_readable();
    maybe_retire(c);
  });
  if (ticks_ % 4 == 0) {
    check_waiting_writers();
  }
  keep_pool_full();
  log::flush_conn();  // a burst of connection lines ends with its count
  if (ticks_ % (1000 / kTickMs) == 0) gc_embryonic();
  if (metrics_ && ticks_ % (1000 / kTickMs) == 0) metrics_->expire();
}

}  // namespace hooker
