#include "bpf/waker.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <chrono>

#include "bpf/fd.h"
#include "waker.skel.h"

namespace hooker {

Result<std::unique_ptr<Waker>> Waker::load(int sk_state_fd, uint32_t max_slots) {
  auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<Waker> w(new Waker());
  w->skel_ = waker_bpf__open();
  if (!w->skel_) return sys_error("open the writer-waking BPF object");
  bpf_map__set_max_entries(w->skel_->maps.wake, max_slots);
  if (int r = bpf_map__reuse_fd(w->skel_->maps.sk_state, sk_state_fd))
    return Error{"share the socket state with the writer-waking program", -r};
  if (int r = waker_bpf__load(w->skel_))
    return Error{"load the writer-waking TCP iterator into the kernel", -r};
  w->link_ = bpf_program__attach_iter(w->skel_->progs.hk_wake_writers, nullptr);
  if (!w->link_) return sys_error("attach the writer-waking TCP iterator");
  w->load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                   .count();
  return w;
}

Waker::~Waker() {
  if (link_) bpf_link__destroy(link_);
  if (skel_) waker_bpf__destroy(skel_);
}

Result<size_t> Waker::wake(std::span<const uint64_t> tokens) {
  int map = bpf_map__fd(skel_->maps.wake);
  __u8 one = 1;
  for (uint64_t t : tokens)
    if (bpf_map_update_elem(map, &t, &one, BPF_ANY)) return sys_error("queue a writer to wake");
  // One pass over this network namespace's TCP sockets.
  Fd it(bpf_iter_create(bpf_link__fd(link_)));
  if (!it.valid()) return sys_error("start the writer-waking TCP iterator");
  char buf[64];
  ssize_t n;
  while ((n = read(it.get(), buf, sizeof(buf))) > 0) {
  }
  if (n < 0) return sys_error("run the writer-waking TCP iterator");
  size_t missed = 0;
  for (uint64_t t : tokens)
    if (bpf_map_delete_elem(map, &t) == 0) missed++;  // still there: not woken
  return missed;
}

}  // namespace hooker
