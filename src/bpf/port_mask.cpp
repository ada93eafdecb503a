#include "bpf/port_mask.h"

#include <atomic>

namespace hooker {

namespace {
void set_range(__u64* bits, uint32_t lo, uint32_t hi) {
  for (uint32_t p = lo; p <= hi; p++) bits[p >> 6] |= __u64{1} << (p & 63);
}
}  // namespace

Result<PortMask> PortMask::of(int map_fd) {
  auto m = Mapping<hk_port_mask>::of(map_fd, 1);
  if (!m) return m.error();
  PortMask pm;
  pm.map_ = m.take();
  return pm;
}

void PortMask::add_port(uint16_t port) {
  ports_.insert(port);
  __u64& w = map_.at(0)->bits[port >> 6];
  std::atomic_ref(w).fetch_or(__u64{1} << (port & 63), std::memory_order_release);
}

void PortMask::drop_port(uint16_t port) {
  if (ports_.erase(port)) narrow();
}

void PortMask::widen(const hk_rules& t) {
  hk_port_mask add{};
  for (uint32_t i = 0; i < t.n && i < HK_MAX_RULES; i++)
    set_range(add.bits, t.rule[i].port_lo, t.rule[i].port_hi);
  __u64* bits = map_.at(0)->bits;
  for (size_t i = 0; i < HK_PORT_MASK_WORDS; i++)
    if (add.bits[i]) std::atomic_ref(bits[i]).fetch_or(add.bits[i], std::memory_order_release);
}

void PortMask::set_file(const hk_rules& t) {
  ranges_.clear();
  for (uint32_t i = 0; i < t.n && i < HK_MAX_RULES; i++)
    ranges_.emplace_back(t.rule[i].port_lo, t.rule[i].port_hi);
  narrow();
}

void PortMask::narrow() {
  hk_port_mask exact{};
  for (uint16_t p : ports_) set_range(exact.bits, p, p);
  for (auto [lo, hi] : ranges_) set_range(exact.bits, lo, hi);
  // Word by word: a bit a live rule needs is set before and after each store.
  __u64* bits = map_.at(0)->bits;
  for (size_t i = 0; i < HK_PORT_MASK_WORDS; i++)
    std::atomic_ref(bits[i]).store(exact.bits[i], std::memory_order_release);
}

}  // namespace hooker
