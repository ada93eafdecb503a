// The application side's two directions: the application's bytes read from
// its slot's lanes (hk_lanes), in turn, straight into the mechanism's
// buffers; the peer's bytes written into the slot's `in`, which sk_msg
// redirects into the application's receive queue, never more than
// kAppQueue of them unread.
#include "app/conn.h"

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>

#include "daemon/tuning.h"

namespace hooker {

ssize_t Conn::read(const iovec* iov, size_t n) {
  for (;;) {
    // The lanes take turns (hk_lanes): the fast one, unless the mode is
    // slow and every fast byte before it has been read. The mode, and that
    // no fast message is under way, are read before the fast lane is found
    // empty, so that emptiness is final.
    uint64_t mode = std::atomic_ref(lanes->mode).load(std::memory_order_acquire);
    bool landed = std::atomic_ref(lanes->own.landing).load(std::memory_order_acquire) == 0 &&
                  std::atomic_ref(lanes->others_landing).load(std::memory_order_acquire) == 0;
    bool slow = (mode & HK_LANE_SLOW) && drained_for == mode;
    msghdr mh{};
    mh.msg_iov = const_cast<iovec*>(iov);
    mh.msg_iovlen = n;
    ssize_t got = recvmsg(slow ? in_fd : out_fd, &mh, MSG_DONTWAIT);
    if (got > 0) {
      taken += static_cast<uint64_t>(got);
      std::atomic_ref(lanes->read).store(taken, std::memory_order_release);
      return got;
    }
    if (got == 0 || (errno != EAGAIN && errno != EINTR)) return -1;
    if (slow || !(mode & HK_LANE_SLOW)) return 0;  // the lane's socket wakes us
    if (!landed) {
      // Another thread's fast message may still be landing (only threads
      // that send on one socket at once get here): that wakes nothing.
      side_.wait(*this, kWaitLanding);
      return 0;
    }
    drained_for = mode;
  }
}

uint64_t Conn::app_reads() const {
  return std::atomic_ref(*consumed).load(std::memory_order_relaxed);
}

ssize_t Conn::deliver(std::span<const std::byte> bytes) {
  if (inbound_dead) return -1;
  size_t done = 0;
  while (done < bytes.size()) {
    // What the application has not read yet stays bounded: redirected
    // bytes are not limited by its receive buffer.
    uint64_t unread = delivered - (app_reads() - consumed_base);
    if (unread >= kAppQueue) {
      side_.wait(*this, kWaitAppRoom);
      break;
    }
    size_t len = std::min<uint64_t>(bytes.size() - done, kAppQueue - unread);
    ssize_t n = send(in_fd, bytes.data() + done, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<size_t>(n);
      delivered += static_cast<uint64_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == ENOMEM || errno == ENOBUFS || errno == EINTR)) {
      // The application's receive queue is full: try again on the next tick.
      side_.wait(*this, kWaitAppRoom);
      break;
    }
    // EACCES/EPIPE: the application socket has left; nobody can read more.
    inbound_dead = true;
    return done > 0 ? static_cast<ssize_t>(done) : -1;
  }
  return static_cast<ssize_t>(done);
}

}  // namespace hooker
