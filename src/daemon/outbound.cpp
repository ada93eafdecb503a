// The application -> wire direction: hookerd reads what the application
// sent from its slot's lanes (hk_lanes) straight into datagram buffers, as
// far as the peer's credit goes, and ends the stream with an END frame.
#include <sys/socket.h>

#include <cerrno>

#include <algorithm>
#include <atomic>

#include "daemon/daemon.h"

namespace hooker {

ssize_t Daemon::read_lanes(Conn& c, iovec* iov, size_t frames) {
  for (;;) {
    // The lanes take turns (hk_lanes): the fast one, unless the mode is
    // slow and every fast byte before it has been read. The mode, and that
    // no fast message is under way, are read before the fast lane is found
    // empty, so that emptiness is final.
    uint64_t mode = std::atomic_ref(c.lanes->mode).load(std::memory_order_acquire);
    bool landed = std::atomic_ref(c.lanes->own.landing).load(std::memory_order_acquire) == 0 &&
                  std::atomic_ref(c.lanes->others_landing).load(std::memory_order_acquire) == 0;
    bool slow = (mode & HK_LANE_SLOW) && c.drained_for == mode;
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = frames;
    ssize_t n = recvmsg(slow ? c.in_fd : c.out_fd, &mh, MSG_DONTWAIT);
    if (n > 0) return n;
    if (n == 0 || (errno != EAGAIN && errno != EINTR)) return -1;
    if (slow || !(mode & HK_LANE_SLOW)) return 0;  // the lane's socket wakes us
    if (!landed) {
      // Another thread's fast message may still be landing (only threads
      // that send on one socket at once get here): that wakes nothing.
      lane_waiters_.add(c);
      return 0;
    }
    c.drained_for = mode;
  }
}

void Daemon::pump(Conn& c) {
  if (c.retired) return;
  while (!c.out_eof && !c.failed) {
    if (c.app_shut_wr && c.sent == c.app_total) {
      c.out_eof = true;
      break;
    }
    uint64_t credit = c.credit();
    size_t room = udp_->room();
    if (credit == 0) return;  // the peer's ACK calls pump again
    if (room == 0) {
      tx_waiters_.add(c);
      flush();
      if (udp_->room() == 0) return;
      continue;
    }
    // At most one GSO group per read.
    size_t frames = std::min<uint64_t>({room, UdpTransport::kGsoMax,
                                        (credit + wire::kMaxPayload - 1) / wire::kMaxPayload});
    iovec iov[UdpTransport::kGsoMax];
    udp_->payload_iov(frames, iov);
    // The last area is trimmed so no byte is read past the credit.
    size_t want = std::min<uint64_t>(credit, frames * wire::kMaxPayload);
    iov[frames - 1].iov_len = want - (frames - 1) * wire::kMaxPayload;
    ssize_t n = read_lanes(c, iov, frames);
    if (n == 0) return;
    if (n < 0) {
      // The slot broke, or a lane closed with bytes owed: the stream cannot
      // be completed, and an END would pass a truncated one off as whole.
      // The next loss check resets it.
      c.failed = true;
      return;
    }
    udp_->commit_data(static_cast<size_t>(n), c.peer_token, c.sent, c.peer);
    c.sent += static_cast<uint64_t>(n);
    std::atomic_ref(c.lanes->read).store(c.sent, std::memory_order_release);
  }
  if (c.out_eof && !c.end_sent && !c.failed) {
    if (udp_->room() == 0) flush();
    if (udp_->room() == 0) {
      tx_waiters_.add(c);
      return;
    }
    udp_->queue({HK_WIRE_END, HK_MECH_UDP, c.peer_token, c.sent, 0, {}}, c.peer);
    c.end_sent = true;
  }
}

}  // namespace hooker
