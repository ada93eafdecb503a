#include "mech/udp/socket.h"

#include <netinet/udp.h>

#include <cstring>

// linux/udp.h's, which glibc's headers lack.
#ifndef SOL_UDPLITE
#define SOL_UDPLITE 136
#endif
#ifndef UDP_NO_CHECK6_TX
#define UDP_NO_CHECK6_TX 101
#define UDP_NO_CHECK6_RX 102
#endif
#ifndef UDPLITE_SEND_CSCOV
#define UDPLITE_SEND_CSCOV 10
#define UDPLITE_RECV_CSCOV 11
#endif

namespace hooker {

Result<std::unique_ptr<UdpSocket>> UdpSocket::open(uint16_t port, const DatagramProto& proto) {
  const std::string& name = proto.name;
  Fd fd(socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, proto.protocol));
  if (!fd.valid()) {
    // A kernel built without the protocol (UDP-Lite is optional, and
    // deprecated upstream): say that, not just the errno.
    if (errno == EPROTONOSUPPORT || errno == ESOCKTNOSUPPORT)
      return sys_error("this kernel has no " + name + " (IP protocol " +
                       std::to_string(proto.protocol) + ")");
    return sys_error("socket for " + name);
  }
  int zero = 0, one = 1;
  // One socket for IPv4 (mapped) and IPv6 peers.
  if (setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0)
    return sys_error("make the " + name + " socket dual-stack");
  // Large buffers: the receive window granted to peers is sized from the
  // receive buffer, so a burst never overflows it.
  int big = 64 << 20;
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big));
  if (proto.gro && setsockopt(fd.get(), IPPROTO_UDP, UDP_GRO, &one, sizeof(one)) < 0)
    return sys_error("enable " + name + " GRO");
  if (proto.no_check) {
    // IPv4 (mapped) peers go through udp_sendmsg, which reads SO_NO_CHECK;
    // IPv6 ones through udpv6_sendmsg, which reads UDP_NO_CHECK6_TX. On
    // receive only IPv6 refuses a zero checksum unless told.
    if (setsockopt(fd.get(), SOL_SOCKET, SO_NO_CHECK, &one, sizeof(one)) < 0 ||
        setsockopt(fd.get(), IPPROTO_UDP, UDP_NO_CHECK6_TX, &one, sizeof(one)) < 0 ||
        setsockopt(fd.get(), IPPROTO_UDP, UDP_NO_CHECK6_RX, &one, sizeof(one)) < 0)
      return sys_error("turn the " + name + " socket's checksums off");
  }
  if (proto.coverage) {
    int cov = proto.coverage;
    if (setsockopt(fd.get(), SOL_UDPLITE, UDPLITE_SEND_CSCOV, &cov, sizeof(cov)) < 0)
      return sys_error("set the " + name + " checksum coverage to " + std::to_string(cov));
    // A datagram whose checksum covered less is dropped by the kernel: its
    // frame header (token, offset) would be unchecked.
    if (setsockopt(fd.get(), SOL_UDPLITE, UDPLITE_RECV_CSCOV, &cov, sizeof(cov)) < 0)
      return sys_error("set the " + name + " minimum checksum coverage to " +
                       std::to_string(cov));
  }
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_any;
  a.sin6_port = htons(port);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) < 0) {
    if (errno == EADDRINUSE)
      return Error{name + " port " + std::to_string(port) +
                       " is in use: pick another with --port (" + proto.who + ")",
                   0};
    return sys_error("bind " + name + " port " + std::to_string(port));
  }
  // Port 0 asked the kernel for one: describe() names the one it gave.
  socklen_t alen = sizeof(a);
  if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &alen) < 0)
    return sys_error("read the " + name + " socket's port");
  return std::unique_ptr<UdpSocket>(new UdpSocket(std::move(fd), ntohs(a.sin6_port), proto));
}

UdpSocket::UdpSocket(Fd fd, uint16_t port, const DatagramProto& proto)
    : fd_(std::move(fd)), port_(port), proto_(proto), tx_(kBatch), tx_iov_(kBatch),
      tx_msg_(kBatch), send_coverage_(proto.coverage), rx_msgs_(proto.gro ? kRxGroMsgs : kRxMsgs),
      rx_size_(proto.gro ? kRxGroBuf : wire::kMaxDatagram), rx_(rx_msgs_ * rx_size_),
      rx_iov_(rx_msgs_), rx_msg_(rx_msgs_), rx_from_(rx_msgs_), rx_cmsg_(rx_msgs_) {
  groups_.reserve(kBatch);
}

std::string UdpSocket::describe() const {
  std::string s = proto_.name + " socket on port " + std::to_string(port_) + " (dual-stack";
  if (proto_.gso && proto_.gro) s += ", GSO and GRO";
  else if (proto_.gso) s += ", GSO";
  else if (proto_.gro) s += ", GRO";
  if (proto_.no_check) s += ", no checksum";
  if (proto_.coverage)
    s += ", checksum covers the 8+" + std::to_string(proto_.coverage - 8) + " header bytes";
  return s + ")";
}

static_assert(wire::kMaxDatagram == DatagramIo::kMaxDatagram);

void UdpSocket::commit(size_t len, const sockaddr_in6& to, uint16_t coverage) {
  size_t i = queued_++;
  tx_iov_[i] = {tx_[i].data(), len};
  coverage = proto_.coverage && coverage ? coverage : proto_.coverage;
  // Extend the last group if the kernel can segment this datagram with it.
  if (!groups_.empty()) {
    Group& g = groups_.back();
    size_t seg = tx_iov_[g.first].iov_len;
    bool same_to = std::memcmp(&g.to, &to, sizeof(to)) == 0;
    bool last_full = tx_iov_[g.first + g.count - 1].iov_len == seg;
    if (proto_.gso && same_to && last_full && len <= seg && g.count < kGsoMax &&
        g.first + g.count == i && g.coverage == coverage) {
      g.count++;
      return;
    }
  }
  groups_.push_back(Group{i, 1, to, coverage, {}});
}

Result<bool> UdpSocket::flush() {
  size_t n = groups_.size();
  for (size_t k = sent_groups_; k < n; k++) {
    Group& g = groups_[k];
    msghdr& h = tx_msg_[k].msg_hdr;
    h = {};
    h.msg_name = &g.to;
    h.msg_namelen = sizeof(g.to);
    h.msg_iov = &tx_iov_[g.first];
    h.msg_iovlen = g.count;
    if (g.count > 1) {
      h.msg_control = g.cmsg;
      h.msg_controllen = sizeof(g.cmsg);
      cmsghdr* c = CMSG_FIRSTHDR(&h);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      uint16_t seg = static_cast<uint16_t>(tx_iov_[g.first].iov_len);
      std::memcpy(CMSG_DATA(c), &seg, sizeof(seg));
    }
  }
  while (sent_groups_ < n) {
    // UDP-Lite's coverage is the socket's: groups of another coverage go
    // in a sendmmsg of their own, the option set before it. Most rules
    // share one coverage, so this is rare.
    size_t run = sent_groups_ + 1;
    while (run < n && groups_[run].coverage == groups_[sent_groups_].coverage) run++;
    if (uint16_t cov = groups_[sent_groups_].coverage; cov != send_coverage_) {
      int v = cov;
      if (setsockopt(fd_.get(), SOL_UDPLITE, UDPLITE_SEND_CSCOV, &v, sizeof(v)) < 0)
        return sys_error("set the " + proto_.name + " checksum coverage to " + std::to_string(v));
      send_coverage_ = cov;
    }
    int r = sendmmsg(fd_.get(), &tx_msg_[sent_groups_],
                     static_cast<unsigned>(run - sent_groups_), 0);
    if (r < 0) {
      if (errno == EAGAIN || errno == ENOBUFS) return false;
      if (errno == EINTR) continue;
      Group& g = groups_[sent_groups_];
      // A segment larger than the route's MTU now (it shrank after the
      // connection sized its datagrams): GSO refuses it (EINVAL, EMSGSIZE).
      // One datagram at a time the kernel fragments them instead.
      if ((errno == EINVAL || errno == EMSGSIZE) && g.count > 1) {
        groups_split++;
        shrunk.push_back(g.to);
        split(sent_groups_);
        return flush();
      }
      // Refused for good: dropped, never retried forever (the queue would
      // stay stuck behind it). For the peer it is a datagram lost.
      int err = errno;
      if (err == EMSGSIZE) shrunk.push_back(g.to);
      send_failed += g.count;
      sent_groups_++;
      if (sent_groups_ == n) {
        groups_.clear();
        queued_ = sent_groups_ = 0;
      }
      errno = err;
      return sys_error("sendmmsg on the " + proto_.name + " socket (" +
                       std::to_string(g.count) + " datagrams dropped)");
    }
    for (int k = 0; k < r; k++) datagrams_sent += groups_[sent_groups_ + k].count;
    sent_groups_ += static_cast<size_t>(r);
  }
  groups_.clear();
  queued_ = sent_groups_ = 0;
  return true;
}

void UdpSocket::split(size_t k) {
  Group g = groups_[k];
  std::vector<Group> one(g.count, g);
  for (size_t i = 0; i < g.count; i++) {
    one[i].first = g.first + i;
    one[i].count = 1;
  }
  groups_.erase(groups_.begin() + static_cast<ptrdiff_t>(k));
  groups_.insert(groups_.begin() + static_cast<ptrdiff_t>(k), one.begin(), one.end());
}

uint32_t path_mtu(const sockaddr_in6& peer) {
  // A connected socket asks the route (and the PMTU the kernel learned from
  // ICMP) for that one destination; an unconnected one cannot.
  bool v4 = IN6_IS_ADDR_V4MAPPED(&peer.sin6_addr);
  Fd fd(socket(v4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return 0;
  int r;
  if (v4) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = peer.sin6_port;
    std::memcpy(&a.sin_addr, &peer.sin6_addr.s6_addr[12], 4);
    r = connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a));
  } else {
    r = connect(fd.get(), reinterpret_cast<const sockaddr*>(&peer), sizeof(peer));
  }
  int mtu = 0;
  socklen_t len = sizeof(mtu);
  if (r < 0 || getsockopt(fd.get(), v4 ? IPPROTO_IP : IPPROTO_IPV6, v4 ? IP_MTU : IPV6_MTU, &mtu,
                          &len) < 0)
    return 0;
  return mtu > 0 ? static_cast<uint32_t>(mtu) : 0;
}

Result<bool> UdpSocket::receive(const Handler& on_dgram) {
  for (size_t i = 0; i < rx_msgs_; i++) {
    rx_iov_[i] = {rx_.data() + i * rx_size_, rx_size_};
    rx_msg_[i] = {};
    msghdr& h = rx_msg_[i].msg_hdr;
    h.msg_iov = &rx_iov_[i];
    h.msg_iovlen = 1;
    h.msg_name = &rx_from_[i];
    h.msg_namelen = sizeof(sockaddr_in6);
    if (proto_.gro) {
      h.msg_control = rx_cmsg_[i].data();
      h.msg_controllen = rx_cmsg_[i].size();
    }
  }
  int n = recvmmsg(fd_.get(), rx_msg_.data(), static_cast<unsigned>(rx_msgs_), MSG_DONTWAIT,
                   nullptr);
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return false;
    return sys_error("recvmmsg on the " + proto_.name + " socket");
  }
  for (int i = 0; i < n; i++) {
    msghdr& h = rx_msg_[i].msg_hdr;
    size_t len = rx_msg_[i].msg_len;
    // GRO coalesced several datagrams of one sender: split at gso_size.
    size_t seg = len;
    for (cmsghdr* c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c))
      if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
        int s;
        std::memcpy(&s, CMSG_DATA(c), sizeof(s));
        if (s > 0) seg = static_cast<size_t>(s);
      }
    if (h.msg_flags & MSG_TRUNC) {
      truncated++;  // larger than any message we expect: drop it whole
      continue;
    }
    const std::byte* buf = rx_.data() + static_cast<size_t>(i) * rx_size_;
    for (size_t off = 0; off < len; off += seg) {
      size_t l = std::min(seg, len - off);
      datagrams_received++;
      on_dgram(rx_from_[i], std::span<const std::byte>(buf + off, l));
    }
  }
  return static_cast<size_t>(n) == rx_msgs_;  // a full batch: maybe more
}

}  // namespace hooker
