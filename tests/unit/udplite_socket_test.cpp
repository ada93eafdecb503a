// The `udplite` mechanism's socket on loopback, against a plain UDP-Lite
// socket as the peer: no root, every wait bounded by poll. The checksum
// coverage is observed from the peer's side too: a receiver demanding more
// coverage than Hooker's sender gives drops its long datagrams.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstring>
#include <vector>

#include "bpf/fd.h"
#include "core/wire.h"
#include "mech/udplite/udplite.h"

using namespace hooker;

namespace {

constexpr int kSolUdpLite = 136, kSendCscov = 10, kRecvCscov = 11;
constexpr int kCoverage = 8 + static_cast<int>(wire::kHeader);

std::vector<std::byte> pattern(size_t n, uint8_t seed) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; i++) v[i] = std::byte(uint8_t(i * 7 + seed));
  return v;
}

bool readable(int fd, int ms = 1000) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, ms) == 1;
}

int get_int(int fd, int level, int opt) {
  int v = -1;
  socklen_t l = sizeof(v);
  EXPECT_EQ(getsockopt(fd, level, opt, &v, &l), 0) << std::strerror(errno);
  return v;
}

sockaddr_in6 loopback(uint16_t port) {
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  a.sin6_port = htons(port);
  return a;
}

// A plain UDP-Lite socket on ::1 sending with `send_cov` and accepting
// nothing covered less than `recv_cov` (0: the kernel's defaults).
struct Peer {
  Fd fd;
  uint16_t port = 0;
  Peer(int send_cov, int recv_cov) : fd(socket(AF_INET6, SOCK_DGRAM, IPPROTO_UDPLITE)) {
    EXPECT_TRUE(fd.valid()) << std::strerror(errno);
    if (send_cov) setsockopt(fd.get(), kSolUdpLite, kSendCscov, &send_cov, sizeof(send_cov));
    if (recv_cov) setsockopt(fd.get(), kSolUdpLite, kRecvCscov, &recv_cov, sizeof(recv_cov));
    sockaddr_in6 a = loopback(0);
    EXPECT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    socklen_t l = sizeof(a);
    getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &l);
    port = ntohs(a.sin6_port);
  }
  void send_to(uint16_t to, const std::vector<std::byte>& d) {
    sockaddr_in6 a = loopback(to);
    ASSERT_EQ(sendto(fd.get(), d.data(), d.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a)),
              ssize_t(d.size()))
        << std::strerror(errno);
  }
  std::vector<std::byte> receive() {
    std::vector<std::byte> b(65536);
    if (!readable(fd.get())) return {};
    ssize_t n = recv(fd.get(), b.data(), b.size(), MSG_DONTWAIT);
    b.resize(n > 0 ? size_t(n) : 0);
    return b;
  }
};

class UdpLiteSocket : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = UdpSocket::open(0, udplite_proto());
    if (!s) {
      if (s.error().err == EPROTONOSUPPORT || s.error().err == ESOCKTNOSUPPORT)
        GTEST_SKIP() << s.error().message();
      FAIL() << s.error().message();
    }
    io = s.take();
  }
  void send(const std::vector<std::byte>& d, uint16_t to) {
    std::memcpy(io->tx_buffer(0), d.data(), d.size());
    io->commit(d.size(), loopback(to));
  }
  // What one receive() call hands over, after waiting for the first.
  std::vector<std::pair<sockaddr_in6, std::vector<std::byte>>> receive() {
    std::vector<std::pair<sockaddr_in6, std::vector<std::byte>>> got;
    if (!readable(io->fd())) return got;
    auto r = io->receive([&](const sockaddr_in6& from, std::span<const std::byte> d) {
      got.push_back({from, {d.begin(), d.end()}});
    });
    EXPECT_TRUE(r) << r.error().message();
    return got;
  }
  std::unique_ptr<UdpSocket> io;
};

TEST_F(UdpLiteSocket, CoversTheHeadersBothWays) {
  int fd = io->fd();
  EXPECT_EQ(get_int(fd, SOL_SOCKET, SO_PROTOCOL), IPPROTO_UDPLITE);
  EXPECT_EQ(get_int(fd, kSolUdpLite, kSendCscov), kCoverage);
  EXPECT_EQ(get_int(fd, kSolUdpLite, kRecvCscov), kCoverage);
  EXPECT_EQ(get_int(fd, IPPROTO_IPV6, IPV6_V6ONLY), 0);
  EXPECT_NE(io->port(), 0);
  EXPECT_EQ(io->describe(), "UDP-Lite socket on port " + std::to_string(io->port()) +
                                " (dual-stack, checksum covers the 8+" +
                                std::to_string(wire::kHeader) + " header bytes)");
}

TEST_F(UdpLiteSocket, DatagramsRoundTrip) {
  Peer peer(kCoverage, kCoverage);
  auto out = pattern(wire::kMaxDatagram, 1), in = pattern(700, 2), ack = pattern(wire::kHeader, 3);
  send(out, peer.port);
  send(ack, peer.port);  // same length, same peer: what GSO would have grouped
  ASSERT_TRUE(*io->flush());
  EXPECT_EQ(io->datagrams_sent, 2u);
  EXPECT_EQ(peer.receive(), out);
  EXPECT_EQ(peer.receive(), ack);

  peer.send_to(io->port(), in);
  auto got = receive();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].second, in);
  EXPECT_EQ(ntohs(got[0].first.sin6_port), peer.port);
  EXPECT_EQ(io->datagrams_received, 1u);
}

// The coverage on the wire is exactly the headers: a receiver demanding one
// byte more drops the long datagram and takes the header-only one (fully
// covered, so not partial); one demanding exactly that takes both.
TEST_F(UdpLiteSocket, SendsExactlyTheHeaderCoverage) {
  Peer strict(0, kCoverage + 1), exact(0, kCoverage);
  auto data = pattern(1000, 4), ack = pattern(wire::kHeader, 5);
  for (uint16_t to : {strict.port, exact.port}) {
    send(data, to);
    send(ack, to);
  }
  ASSERT_TRUE(*io->flush());
  EXPECT_EQ(strict.receive(), ack) << "a datagram covered less than asked got through";
  EXPECT_EQ(exact.receive(), data);
  EXPECT_EQ(exact.receive(), ack);
}

// A datagram committed with a coverage of its own (udplite:cov=N) leaves
// with it, and the ones around it with the socket's: peers demanding 200
// take the 200 one only, even with all three in one flush, in any order.
TEST_F(UdpLiteSocket, SendsEachDatagramWithItsCoverage) {
  Peer strict(0, 200), exact(0, kCoverage);
  auto before = pattern(1000, 9), covered = pattern(1000, 10), after = pattern(1000, 11);
  for (uint16_t to : {strict.port, exact.port}) {
    send(before, to);
    std::memcpy(io->tx_buffer(0), covered.data(), covered.size());
    io->commit(covered.size(), loopback(to), 200);
    send(after, to);
  }
  ASSERT_TRUE(*io->flush());
  EXPECT_EQ(io->datagrams_sent, 6u);
  EXPECT_EQ(strict.receive(), covered);
  EXPECT_EQ(strict.receive(), std::vector<std::byte>{}) << "one covered 40 got through";
  EXPECT_EQ(exact.receive(), before);
  EXPECT_EQ(exact.receive(), covered);
  EXPECT_EQ(exact.receive(), after);
  EXPECT_EQ(get_int(io->fd(), kSolUdpLite, kSendCscov), kCoverage);  // back to its own
}

// What a peer covered less than the frame header of is dropped by the
// kernel: Hooker sees only the next, properly covered datagram.
TEST_F(UdpLiteSocket, DropsDatagramsCoveredLess) {
  Peer sloppy(8, 0), good(kCoverage, 0);
  auto bad = pattern(500, 6), fine = pattern(500, 7);
  sloppy.send_to(io->port(), bad);
  good.send_to(io->port(), fine);
  auto got = receive();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].second, fine);
}

// Dual-stack: an IPv4 peer reaches it (as a mapped address).
TEST_F(UdpLiteSocket, TakesIpv4Peers) {
  Fd v4(socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE));
  ASSERT_TRUE(v4.valid());
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(io->port());
  auto d = pattern(300, 8);
  ASSERT_EQ(sendto(v4.get(), d.data(), d.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a)),
            ssize_t(d.size()));
  auto got = receive();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].second, d);
  EXPECT_TRUE(IN6_IS_ADDR_V4MAPPED(&got[0].first.sin6_addr));
}

// Its port is its own: a second one on the same port is refused, saying so.
TEST_F(UdpLiteSocket, PortInUseSaysUdpLite) {
  auto again = UdpSocket::open(io->port(), udplite_proto());
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().what.rfind("UDP-Lite port " + std::to_string(io->port()) + " is in use", 0),
            0u)
      << again.error().what;
  // ...while UDP's port space is another: the same number is free there.
  auto udp = UdpSocket::open(io->port());
  EXPECT_TRUE(udp) << (udp ? "" : udp.error().message());
}

}  // namespace
