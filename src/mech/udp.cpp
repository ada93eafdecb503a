#include "mech/udp.h"

#include <cstring>

namespace hooker {

Result<UdpTransport> UdpTransport::open(uint16_t port) {
  Fd fd(socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return sys_error("socket for UDP");
  int zero = 0;
  // One socket for IPv4 (mapped) and IPv6 peers.
  if (setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0)
    return sys_error("make the UDP socket dual-stack");
  // Large buffers: the receive window granted to peers is sized from the
  // receive buffer, so a burst never overflows it.
  int big = 64 << 20;
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big));
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_any;
  a.sin6_port = htons(port);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) < 0) {
    if (errno == EADDRINUSE)
      return Error{"UDP port " + std::to_string(port) +
                       " is in use: pick another with --port (ss -ulpn shows who has it)",
                   0};
    return sys_error("bind UDP port " + std::to_string(port));
  }
  return UdpTransport(std::move(fd));
}

UdpTransport::UdpTransport(Fd fd)
    : fd_(std::move(fd)),
      tx_(kBatch), rx_(kBatch), tx_iov_(kBatch), rx_iov_(kBatch),
      tx_msg_(kBatch), rx_msg_(kBatch), tx_to_(kBatch), rx_from_(kBatch) {}

void UdpTransport::set_msg(size_t i, size_t len, const sockaddr_in6& to) {
  tx_iov_[i] = {tx_[i].data(), len};
  tx_to_[i] = to;
  tx_msg_[i] = {};
  tx_msg_[i].msg_hdr.msg_iov = &tx_iov_[i];
  tx_msg_[i].msg_hdr.msg_iovlen = 1;
  tx_msg_[i].msg_hdr.msg_name = &tx_to_[i];
  tx_msg_[i].msg_hdr.msg_namelen = sizeof(sockaddr_in6);
}

void UdpTransport::queue(const wire::Frame& f, const sockaddr_in6& to) {
  size_t i = queued_++;
  wire::encode_header(f, tx_[i].data());
  if (!f.payload.empty())
    std::memcpy(tx_[i].data() + wire::kHeader, f.payload.data(), f.payload.size());
  set_msg(i, wire::kHeader + f.payload.size(), to);
}

void UdpTransport::payload_iov(size_t n, iovec* out) {
  for (size_t k = 0; k < n; k++)
    out[k] = {tx_[queued_ + k].data() + wire::kHeader, wire::kMaxPayload};
}

void UdpTransport::commit_data(size_t bytes, uint64_t token, uint64_t offset,
                               const sockaddr_in6& to) {
  while (bytes > 0) {
    size_t len = bytes < wire::kMaxPayload ? bytes : wire::kMaxPayload;
    size_t i = queued_++;
    wire::Frame f{HK_WIRE_DATA, HK_MECH_UDP, token, offset, 0,
                  std::span<const std::byte>(tx_[i].data() + wire::kHeader, len)};
    wire::encode_header(f, tx_[i].data());
    set_msg(i, wire::kHeader + len, to);
    bytes -= len;
    offset += len;
  }
}

Result<bool> UdpTransport::flush() {
  while (sent_ < queued_) {
    int n = sendmmsg(fd_.get(), &tx_msg_[sent_], static_cast<unsigned>(queued_ - sent_), 0);
    if (n < 0) {
      if (errno == EAGAIN || errno == ENOBUFS) return false;
      if (errno == EINTR) continue;
      return sys_error("sendmmsg on the UDP socket");
    }
    sent_ += static_cast<size_t>(n);
    datagrams_sent += static_cast<uint64_t>(n);
  }
  queued_ = sent_ = 0;
  return true;
}

Result<size_t> UdpTransport::receive(const Handler& on_dgram) {
  for (size_t i = 0; i < kBatch; i++) {
    rx_iov_[i] = {rx_[i].data(), rx_[i].size()};
    rx_msg_[i] = {};
    rx_msg_[i].msg_hdr.msg_iov = &rx_iov_[i];
    rx_msg_[i].msg_hdr.msg_iovlen = 1;
    rx_msg_[i].msg_hdr.msg_name = &rx_from_[i];
    rx_msg_[i].msg_hdr.msg_namelen = sizeof(sockaddr_in6);
  }
  int n = recvmmsg(fd_.get(), rx_msg_.data(), kBatch, MSG_DONTWAIT, nullptr);
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return size_t{0};
    return sys_error("recvmmsg on the UDP socket");
  }
  for (int i = 0; i < n; i++) {
    size_t len = rx_msg_[i].msg_len;
    if ((rx_msg_[i].msg_hdr.msg_flags & MSG_TRUNC) || len > wire::kMaxDatagram) {
      truncated++;  // larger than any Hooker datagram: the parser drops it
      len = wire::kMaxDatagram + 1;
    }
    datagrams_received++;
    on_dgram(rx_from_[i], std::span<const std::byte>(rx_[i].data(), len));
  }
  return static_cast<size_t>(n);
}

}  // namespace hooker
