// The `udp` mechanism's wire side: one dual-stack UDP socket. Datagrams of
// one connection leave in GSO groups (UDP_SEGMENT: one trip through the
// stack for up to 44 datagrams), arrive coalesced by GRO (UDP_GRO), and all
// buffers are allocated once.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "bpf/fd.h"
#include "core/result.h"
#include "core/wire.h"

namespace hooker {

class UdpTransport {
 public:
  static constexpr size_t kBatch = 256;       // datagrams queued before a flush
  static constexpr size_t kGsoMax = 44;       // 44 x 1432 B fits a 64 KB IP packet
  static constexpr size_t kRxMsgs = 16;       // GRO'd messages per receive call
  static constexpr size_t kRxBuf = 65536;

  static Result<UdpTransport> open(uint16_t port);
  int fd() const { return fd_.get(); }

  // Room for this many more datagrams before flush() must run.
  size_t room() const { return kBatch - queued_; }
  // Queues one datagram: header from `f`, then f.payload. Requires room().
  void queue(const wire::Frame& f, const sockaddr_in6& to);

  // Zero-copy framing: the payload areas of the next `n` free datagrams
  // (n <= room()), kMaxPayload bytes each, for a readv() straight from the
  // application's slot; commit_data() then turns the first `bytes` read into
  // DATA datagrams at stream offset `offset`.
  void payload_iov(size_t n, iovec* out);
  void commit_data(size_t bytes, uint64_t token, uint64_t offset, const sockaddr_in6& to);

  // Sends what is queued. Returns false if the socket is full (wait for
  // EPOLLOUT); what was not sent stays queued, in order.
  Result<bool> flush();
  bool idle() const { return queued_ == 0; }

  // Receives one batch; calls on_dgram(source, bytes) for each datagram.
  // Returns the number of messages read: fewer than kRxMsgs means drained.
  using Handler = std::function<void(const sockaddr_in6&, std::span<const std::byte>)>;
  Result<size_t> receive(const Handler& on_dgram);

  uint64_t datagrams_sent = 0, datagrams_received = 0, truncated = 0, sends = 0;

 private:
  explicit UdpTransport(Fd fd);
  using Buf = std::array<std::byte, wire::kMaxDatagram>;
  // Consecutive datagrams to one address, all of equal length but the last:
  // one sendmsg, segmented by the kernel.
  struct Group {
    size_t first, count;
    sockaddr_in6 to;
    alignas(cmsghdr) char cmsg[CMSG_SPACE(sizeof(uint16_t))];
  };
  size_t put(const sockaddr_in6& to, size_t len);  // claims the next buffer

  Fd fd_;
  std::vector<Buf> tx_;
  std::vector<iovec> tx_iov_;
  std::vector<Group> groups_;
  std::vector<mmsghdr> tx_msg_;
  size_t queued_ = 0, sent_groups_ = 0;

  std::vector<std::array<std::byte, kRxBuf>> rx_;
  std::vector<iovec> rx_iov_;
  std::vector<mmsghdr> rx_msg_;
  std::vector<sockaddr_in6> rx_from_;
  std::vector<std::array<char, CMSG_SPACE(sizeof(int))>> rx_cmsg_;
};

}  // namespace hooker
