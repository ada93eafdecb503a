// The slot pool: loopback TCP socket pairs that hookerd prepares before any
// connection needs them. The redirector binds a new connection to a free
// slot inside the kernel, so the application's first byte already has a
// place to go. Per slot:
//   out: the application's sends arrive here by one of two lanes (see
//        hk_lanes): the fast one straight into its receive queue, the slow
//        one egress through its TCP over loopback to `in`, whose small
//        buffers make the application wait while hookerd is behind;
//   in:  hookerd reads the slow lane here, and writes the peer's bytes
//        here, which sk_msg redirects into the application's receive queue.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "bpf/fd.h"
#include "bpf/kernel.h"
#include "core/abi.h"
#include "core/result.h"

namespace hooker {

struct Slot {
  Fd out, in;
  // Their keys in the SOCKHASH (`out` is also at the slot's index in the
  // SOCKMAP). There both get the sockmap's receive, which reads what was
  // redirected into them.
  hk_flow in_key{}, out_key{};
};

class SlotPool {
 public:
  // Called for each new pair, before the kernel may take it: hookerd
  // watches its sockets for the pair's whole life, whichever connections
  // it carries (no system calls per connection for that).
  using Watch = std::function<Status(uint32_t id, const Slot& s)>;
  static Result<SlotPool> create(const Kernel& k, uint32_t max_slots, Watch watch);

  // Makes up to n new slots and offers them to the kernel.
  Status grow(uint32_t n);
  // Offers a used slot again: its pair if `may_reuse` and nothing is left
  // in it, else a fresh pair under the same id.
  Status recycle(uint32_t id, bool may_reuse);
  // Points the slot's inbound socket at the application socket.
  Status bind_inbound(uint32_t id, const hk_flow& app);

  Slot* get(uint32_t id) { return id < slots_.size() && slots_[id] ? &*slots_[id] : nullptr; }
  uint32_t created() const { return static_cast<uint32_t>(slots_.size()); }
  uint32_t max() const { return max_; }
  // Offered to the kernel so far (the kernel's counters say how many it took).
  uint64_t offered() const { return offered_; }
  // Used slots offered again with their own pair (recycle).
  uint64_t reused() const { return reused_; }
  // Gives an id back to the kernel's free queue without new sockets (a
  // handshake that reserved it never completed).
  Status offer(uint32_t id);

 private:
  SlotPool(const Kernel& k, Fd listener, uint32_t max, Watch watch)
      : k_(&k), listener_(std::move(listener)), max_(max), watch_(std::move(watch)) {}
  Result<Slot> make_pair();
  Status publish(uint32_t id);

  const Kernel* k_;
  Fd listener_;
  uint32_t max_;
  Watch watch_;
  uint64_t offered_ = 0;
  uint64_t reused_ = 0;
  std::vector<std::optional<Slot>> slots_;
};

}  // namespace hooker
