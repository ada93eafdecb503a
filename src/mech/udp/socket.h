// The datagram socket of `udp` and `udplite`: one dual-stack socket, all
// buffers allocated once. Over UDP, datagrams to one peer leave in GSO
// groups (UDP_SEGMENT: one trip through the stack for up to 44 datagrams)
// and arrive coalesced by GRO (UDP_GRO). The kernel offers neither for
// UDP-Lite: there it is one datagram per message, batched by sendmmsg and
// recvmmsg.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "bpf/fd.h"
#include "core/result.h"
#include "core/wire.h"
#include "mech/mechanism.h"

namespace hooker {

// Which datagram protocol a UdpSocket speaks, and how.
struct DatagramProto {
  int protocol = IPPROTO_UDP;  // socket(AF_INET6, SOCK_DGRAM, protocol)
  std::string name = "UDP";    // in messages: "UDP port 7000 is in use"
  // Lists the sockets holding a port, for the "in use" message.
  std::string who = "ss -ulpn shows who has it";
  // UDP-Lite only: bytes its checksum covers, from its own 8-byte header
  // on; the same is the least a received datagram must have covered. 0:
  // the whole datagram, as UDP.
  uint16_t coverage = 0;
  bool gso = true, gro = true;  // UDP_SEGMENT on send, UDP_GRO on receive
  // UDP checksums off both ways (SO_NO_CHECK, UDP_NO_CHECK6_TX/RX): datagrams
  // leave with checksum 0 and nothing for the stack to fill in, and arrive
  // with 0 accepted. For udplite's BPF implementation, whose programs write
  // and check the UDP-Lite checksum on the wire (bpf/udplite.bpf.c).
  bool no_check = false;
};

class UdpSocket final : public DatagramIo {
 public:
  static constexpr size_t kBatch = 256;       // datagrams queued before a flush
  static constexpr size_t kGsoMax = 44;       // 44 x 1432 B fits a 64 KB IP packet
  static constexpr size_t kRxGroMsgs = 16;    // GRO'd messages per receive call
  static constexpr size_t kRxGroBuf = 65536;
  static constexpr size_t kRxMsgs = 64;       // single datagrams per receive call

  // Bound to `port` (0: one the kernel picks; port() says which).
  static Result<std::unique_ptr<UdpSocket>> open(uint16_t port, const DatagramProto& proto = {});
  int fd() const override { return fd_.get(); }
  uint16_t port() const { return port_; }

  size_t room() const override { return kBatch - queued_; }
  size_t queued() const override { return queued_; }
  std::byte* tx_buffer(size_t k) override { return tx_[queued_ + k].data(); }
  void commit(size_t len, const sockaddr_in6& to, uint16_t coverage = 0) override;
  Result<bool> flush() override;
  Result<bool> receive(const Handler& on_datagram) override;
  std::string describe() const override;

 private:
  UdpSocket(Fd fd, uint16_t port, const DatagramProto& proto);
  void split(size_t k);  // group k into groups of one datagram each
  using Buf = std::array<std::byte, wire::kMaxDatagram>;
  // Consecutive datagrams to one address, all of equal length but the last:
  // one sendmsg, segmented by the kernel. Without GSO, one datagram each.
  struct Group {
    size_t first, count;
    sockaddr_in6 to;
    uint16_t coverage;  // UDP-Lite: what the checksum covers
    alignas(cmsghdr) char cmsg[CMSG_SPACE(sizeof(uint16_t))];
  };

  Fd fd_;
  uint16_t port_;
  DatagramProto proto_;
  std::vector<Buf> tx_;
  std::vector<iovec> tx_iov_;
  std::vector<Group> groups_;
  std::vector<mmsghdr> tx_msg_;
  size_t queued_ = 0, sent_groups_ = 0;
  uint16_t send_coverage_;  // UDPLITE_SEND_CSCOV as last set

  // Receive buffers: few large ones under GRO, many of one datagram without.
  size_t rx_msgs_, rx_size_;
  std::vector<std::byte> rx_;  // rx_msgs_ x rx_size_
  std::vector<iovec> rx_iov_;
  std::vector<mmsghdr> rx_msg_;
  std::vector<sockaddr_in6> rx_from_;
  std::vector<std::array<char, CMSG_SPACE(sizeof(int))>> rx_cmsg_;
};

}  // namespace hooker
