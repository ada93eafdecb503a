// Wakes application writers that the slow lane refused (bpf/waker.bpf.c):
// a TCP iterator that calls each one's write-space callback. Loaded on first
// use, so hookerd's start-up does not pay for the kernel BTF it needs.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "core/result.h"

struct waker_bpf;
struct bpf_link;

namespace hooker {

class Waker {
 public:
  // sk_state: the redirector's per-socket storage, shared.
  static Result<std::unique_ptr<Waker>> load(int sk_state_fd, uint32_t max_slots);
  ~Waker();
  Waker(const Waker&) = delete;
  Waker& operator=(const Waker&) = delete;

  // Wakes the writers of these connections (by local token). Returns how
  // many could not be woken: their socket is gone, or the kernel refused.
  Result<size_t> wake(std::span<const uint64_t> tokens);

  double load_ms = 0;

 private:
  Waker() = default;
  waker_bpf* skel_ = nullptr;
  bpf_link* link_ = nullptr;
};

}  // namespace hooker
