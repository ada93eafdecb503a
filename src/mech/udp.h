// The `udp` mechanism's wire side: one dual-stack UDP socket, datagrams
// batched into sendmmsg/recvmmsg, buffers allocated once.
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
  static constexpr size_t kBatch = 64;

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

  // Receives one batch; calls on_dgram(source, bytes) for each. Returns the
  // number received (0 once the socket is drained).
  using Handler = std::function<void(const sockaddr_in6&, std::span<const std::byte>)>;
  Result<size_t> receive(const Handler& on_dgram);

  uint64_t datagrams_sent = 0, datagrams_received = 0, truncated = 0;

 private:
  explicit UdpTransport(Fd fd);
  using Buf = std::array<std::byte, wire::kMaxDatagram + 1>;  // +1 spots oversize
  void set_msg(size_t i, size_t len, const sockaddr_in6& to);

  Fd fd_;
  std::vector<Buf> tx_, rx_;
  std::vector<iovec> tx_iov_, rx_iov_;
  std::vector<mmsghdr> tx_msg_, rx_msg_;
  std::vector<sockaddr_in6> tx_to_, rx_from_;
  size_t queued_ = 0, sent_ = 0;  // [sent_, queued_) waits for the socket
};

}  // namespace hooker
