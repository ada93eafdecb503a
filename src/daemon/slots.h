// The slot pool: loopback TCP socket pairs that hookerd prepares before any
// connection needs them. The redirector binds a new connection to a free
// slot inside the kernel, so the application's first byte already has a
// place to go. Per slot:
//   out: the application's sends are redirected (egress) into it; its TCP
//        carries them to `in` over loopback, and that TCP's flow control is
//        the application's back-pressure;
//   in:  hookerd reads the application's bytes here, and writes the peer's
//        bytes here, which sk_msg redirects into the application's receive
//        queue.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "bpf/fd.h"
#include "bpf/kernel.h"
#include "core/abi.h"
#include "core/result.h"

namespace hooker {

struct Slot {
  Fd out, in;
  hk_flow in_key{};  // its key in the SOCKHASH; `out` is at the slot's index
};

class SlotPool {
 public:
  static Result<SlotPool> create(const Kernel& k, uint32_t max_slots);

  // Makes up to n new slots and offers them to the kernel.
  Status grow(uint32_t n);
  // Replaces a used slot by a fresh pair under the same id and offers it.
  Status recycle(uint32_t id);
  // Points the slot's inbound socket at the application socket.
  Status bind_inbound(uint32_t id, const hk_flow& app);

  Slot* get(uint32_t id) { return id < slots_.size() && slots_[id] ? &*slots_[id] : nullptr; }
  uint32_t created() const { return static_cast<uint32_t>(slots_.size()); }
  uint32_t max() const { return max_; }
  // Offered to the kernel so far (the kernel's counters say how many it took).
  uint64_t offered() const { return offered_; }
  // Gives an id back to the kernel's free queue without new sockets (a
  // handshake that reserved it never completed).
  Status offer(uint32_t id);

 private:
  SlotPool(const Kernel& k, Fd listener, uint32_t max) : k_(&k), listener_(std::move(listener)), max_(max) {}
  Result<Slot> make_pair();
  Status publish(uint32_t id);

  const Kernel* k_;
  Fd listener_;
  uint32_t max_;
  uint64_t offered_ = 0;
  std::vector<std::optional<Slot>> slots_;
};

}  // namespace hooker
