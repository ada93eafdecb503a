// pair_is_quiet: the test hookerd makes before a slot's pair serves another
// connection (src/daemon/slots.cpp). A pair with anything left must fail it.
#include "core/socket_pair.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bpf/fd.h"

namespace hooker {
namespace {

struct Pair {
  Fd a, b;
};

Pair loopback_pair() {
  Fd l(socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(at);
  EXPECT_EQ(bind(l.get(), reinterpret_cast<sockaddr*>(&at), len), 0);
  EXPECT_EQ(listen(l.get(), 1), 0);
  EXPECT_EQ(getsockname(l.get(), reinterpret_cast<sockaddr*>(&at), &len), 0);
  Pair p;
  p.a.reset(socket(AF_INET, SOCK_STREAM, 0));
  EXPECT_EQ(connect(p.a.get(), reinterpret_cast<sockaddr*>(&at), len), 0);
  p.b.reset(accept(l.get(), nullptr, nullptr));
  EXPECT_TRUE(p.b.valid());
  return p;
}

TEST(SocketPair, AnEmptyPairIsQuiet) {
  Pair p = loopback_pair();
  EXPECT_TRUE(pair_is_quiet(p.a.get(), p.b.get()));
}

TEST(SocketPair, AByteLeftOnEitherSideIsNotQuietUntilRead) {
  Pair p = loopback_pair();
  char c = 'x';
  for (auto [from, to] : {std::pair{p.a.get(), p.b.get()}, std::pair{p.b.get(), p.a.get()}}) {
    ASSERT_EQ(send(from, &c, 1, 0), 1);
    EXPECT_FALSE(pair_is_quiet(p.a.get(), p.b.get()));
    EXPECT_FALSE(pair_is_quiet(p.b.get(), p.a.get()));
    // The check only peeks: the byte is still there for whoever reads it.
    ASSERT_EQ(recv(to, &c, 1, MSG_DONTWAIT), 1);
    EXPECT_TRUE(pair_is_quiet(p.a.get(), p.b.get()));
  }
}

TEST(SocketPair, AClosedEndIsNotQuiet) {
  Pair p = loopback_pair();
  ASSERT_EQ(shutdown(p.a.get(), SHUT_WR), 0);
  EXPECT_FALSE(pair_is_quiet(p.a.get(), p.b.get()));
}

TEST(SocketPair, NotASocketIsNotQuiet) {
  Pair p = loopback_pair();
  EXPECT_FALSE(pair_is_quiet(p.a.get(), -1));
}

}  // namespace
}  // namespace hooker
