// listening_on_any: whether hookerd must look for servers that started before
// it (src/bpf/listeners.cpp). Sockets of this test's own, on loopback.
#include "bpf/listeners.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "bpf/fd.h"

namespace hooker {
namespace {

// A TCP socket bound to an ephemeral loopback port, listening if asked.
uint16_t bound(Fd& s, int family, bool listening) {
  s.reset(socket(family, SOCK_STREAM, 0));
  sockaddr_storage at{};
  socklen_t len;
  if (family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&at);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&at);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    len = sizeof(*a);
  }
  EXPECT_EQ(bind(s.get(), reinterpret_cast<sockaddr*>(&at), len), 0);
  if (listening) {
    EXPECT_EQ(listen(s.get(), 1), 0);
  }
  EXPECT_EQ(getsockname(s.get(), reinterpret_cast<sockaddr*>(&at), &len), 0);
  return ntohs(family == AF_INET ? reinterpret_cast<sockaddr_in*>(&at)->sin_port
                                 : reinterpret_cast<sockaddr_in6*>(&at)->sin6_port);
}

TEST(ListeningOnAny, FindsAnIpv4AndAnIpv6Listener) {
  Fd v4, v6;
  uint16_t p4 = bound(v4, AF_INET, true), p6 = bound(v6, AF_INET6, true);
  EXPECT_TRUE(listening_on_any({p4}));
  EXPECT_TRUE(listening_on_any({p6}));
  EXPECT_TRUE(listening_on_any({1, p6, 2}));
}

TEST(ListeningOnAny, IgnoresABoundSocketAndAClosedListener) {
  Fd idle, gone;
  uint16_t p = bound(idle, AF_INET, false), q = bound(gone, AF_INET, true);
  gone.reset();
  EXPECT_FALSE(listening_on_any({p, q}));
}

}  // namespace
}  // namespace hooker
