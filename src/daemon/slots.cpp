#include "daemon/slots.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "core/flow.h"
#include "core/socket_pair.h"
#include "daemon/tuning.h"

namespace hooker {

Result<SlotPool> SlotPool::create(const Kernel& k, uint32_t max_slots, Watch watch) {
  Fd l(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!l.valid()) return sys_error("socket for the slot listener");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) < 0)
    return sys_error("bind the slot listener to 127.0.0.1 (is lo up? ip link set lo up)");
  if (listen(l.get(), 1024) < 0) return sys_error("listen on the slot listener");
  return SlotPool(k, std::move(l), max_slots, std::move(watch));
}

Result<Slot> SlotPool::make_pair() {
  sockaddr_in a{};
  socklen_t al = sizeof(a);
  if (getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&a), &al) < 0)
    return sys_error("getsockname of the slot listener");
  Slot s;
  s.out.reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.out.valid()) return sys_error("socket for a slot");
  if (connect(s.out.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) < 0)
    return sys_error("connect a slot over loopback");
  s.in.reset(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
  if (!s.in.valid()) return sys_error("accept a slot over loopback");
  // Small writes (1-byte sends, request/response) must not wait for Nagle
  // behind a delayed ACK on the loopback hop.
  int one = 1;
  setsockopt(s.out.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(s.in.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  // The slow lane holds little: an application that takes it waits for
  // hookerd after a few round trips instead of queueing megabytes.
  int buf = static_cast<int>(kSlowLaneBuffer);
  setsockopt(s.out.get(), SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
  setsockopt(s.in.get(), SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
  auto in_key = flow_of_socket(s.in.get());
  if (!in_key) return in_key.error();
  s.in_key = *in_key;
  auto out_key = flow_of_socket(s.out.get());
  if (!out_key) return out_key.error();
  s.out_key = *out_key;
  return s;
}

Status SlotPool::publish(uint32_t id) {
  Slot& s = *slots_[id];
  __u64 v = static_cast<__u64>(s.out.get());
  if (bpf_map_update_elem(k_->slot_out_fd(), &id, &v, BPF_ANY))
    return sys_error("put slot " + std::to_string(id) + " in the slot SOCKMAP");
  for (auto [fd, key] : {std::pair{s.in.get(), &s.in_key}, std::pair{s.out.get(), &s.out_key}}) {
    v = static_cast<__u64>(fd);
    if (bpf_map_update_elem(k_->socks_fd(), key, &v, BPF_NOEXIST))
      return sys_error("insert slot " + std::to_string(id) + " into the SOCKHASH");
  }
  if (auto w = watch_(id, s); !w) return w;
  return offer(id);
}

Status SlotPool::offer(uint32_t id) {
  if (bpf_map_update_elem(k_->free_slots_fd(), nullptr, &id, BPF_ANY))
    return sys_error("offer slot " + std::to_string(id) + " to the kernel");
  offered_++;
  return ok();
}

Status SlotPool::grow(uint32_t n) {
  for (uint32_t i = 0; i < n && slots_.size() < max_; i++) {
    auto s = make_pair();
    if (!s) return s.error();
    slots_.emplace_back(s.take());
    if (auto st = publish(static_cast<uint32_t>(slots_.size() - 1)); !st) return st;
  }
  return ok();
}

Status SlotPool::recycle(uint32_t id, bool may_reuse) {
  // A pair the connection left nothing in serves the next one as it is: a
  // new pair costs a loopback handshake, and closing the old one a FIN
  // exchange, on the CPU that short connections wait for (issue 12). Its
  // SOCKMAP and SOCKHASH entries stay; the next bind points it anew.
  if (may_reuse && slots_[id] && pair_is_quiet(slots_[id]->out.get(), slots_[id]->in.get())) {
    reused_++;
    return offer(id);
  }
  // Closing both sockets removes them from the SOCKHASH and the epoll set.
  slots_[id].reset();
  auto s = make_pair();
  if (!s) return s.error();
  slots_[id].emplace(s.take());
  return publish(id);
}

Status SlotPool::bind_inbound(uint32_t id, const hk_flow& app) {
  Slot* s = get(id);
  if (!s) return Error{"bind unknown slot " + std::to_string(id), EINVAL};
  hk_sk st{};
  st.target = app;
  st.redirect_flags = BPF_F_INGRESS;
  st.slot = id;
  st.state = HK_SK_PROXY;
  int fd = s->in.get();
  if (bpf_map_update_elem(k_->sk_state_fd(), &fd, &st, BPF_ANY))
    return sys_error("point slot " + std::to_string(id) + " at its application socket");
  return ok();
}

}  // namespace hooker
