// The `udp` mechanism's socket: one dual-stack UDP socket. Datagrams to one
// peer leave in GSO groups (UDP_SEGMENT: one trip through the stack for up
// to 44 datagrams), arrive coalesced by GRO (UDP_GRO), and all buffers are
// allocated once.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "bpf/fd.h"
#include "core/result.h"
#include "core/wire.h"
#include "mech/mechanism.h"

namespace hooker {

class UdpSocket final : public DatagramIo {
 public:
  static constexpr size_t kBatch = 256;       // datagrams queued before a flush
  static constexpr size_t kGsoMax = 44;       // 44 x 1432 B fits a 64 KB IP packet
  static constexpr size_t kRxMsgs = 16;       // GRO'd messages per receive call
  static constexpr size_t kRxBuf = 65536;

  static Result<std::unique_ptr<UdpSocket>> open(uint16_t port);
  int fd() const override { return fd_.get(); }

  size_t room() const override { return kBatch - queued_; }
  size_t queued() const override { return queued_; }
  std::byte* tx_buffer(size_t k) override { return tx_[queued_ + k].data(); }
  void commit(size_t len, const sockaddr_in6& to) override;
  Result<bool> flush() override;
  Result<bool> receive(const Handler& on_datagram) override;
  std::string describe() const override;

 private:
  UdpSocket(Fd fd, uint16_t port);
  using Buf = std::array<std::byte, wire::kMaxDatagram>;
  // Consecutive datagrams to one address, all of equal length but the last:
  // one sendmsg, segmented by the kernel.
  struct Group {
    size_t first, count;
    sockaddr_in6 to;
    alignas(cmsghdr) char cmsg[CMSG_SPACE(sizeof(uint16_t))];
  };

  Fd fd_;
  uint16_t port_;
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
