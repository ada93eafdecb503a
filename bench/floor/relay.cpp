// hooker-floor-relay: the floor of Hooker's request/response path, measured rather
// than guessed (issue 12). Hooker carries a moved connection's bytes through a daemon
// on each host: the application's send wakes hookerd, which sends a datagram, which
// wakes the peer's hookerd, which hands the bytes to the peer application. A round
// trip wakes a daemon four times. This relay does the same with nothing else: no
// BPF, no framing, no loss recovery, blocking reads, one thread per direction. What
// the suite measures through it is what that shape costs on this machine; Hooker
// cannot be faster than it except by the sockmap redirect being cheaper than the
// loopback TCP hop used here.
//
//   hooker-floor-relay near TCP_PORT PEER_ADDR UDP_PORT
//       accepts one TCP connection on 127.0.0.1:TCP_PORT and carries it over UDP
//       to PEER_ADDR:UDP_PORT
//   hooker-floor-relay far UDP_PORT SERVER_PORT
//       on the first datagram to UDP_PORT, connects to 127.0.0.1:SERVER_PORT and
//       carries the bytes both ways
//
// Prints "ready" once its sockets are bound. Exits 0 when the TCP side closes, 1
// on a socket error or after a minute without traffic, 2 on bad arguments.
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <string_view>
#include <thread>

#include "tool.h"

using hooker::Fd;
using namespace floor_tool;

const Tool floor_tool::kTool = {
    "hooker-floor-relay",
    "usage: hooker-floor-relay near TCP_PORT PEER_ADDR UDP_PORT\n"
    "       hooker-floor-relay far UDP_PORT SERVER_PORT\n",
    60};  // no relay outlives a stalled benchmark by long

namespace {

constexpr size_t kDatagram = 1400;  // fits the veth's MTU with headers

void no_delay(int fd) {
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) die("TCP_NODELAY");
}

// TCP bytes out as datagrams; returns when the TCP side closes.
void tcp_to_udp(int tcp, int udp) {
  char buf[kDatagram];
  for (;;) {
    ssize_t n = recv(tcp, buf, sizeof buf, 0);
    if (n == 0) return;
    if (n < 0) die("recv tcp");
    if (send(udp, buf, static_cast<size_t>(n), 0) != n) die("send udp");
  }
}

// Datagrams in as TCP bytes; runs until the process exits.
void udp_to_tcp(int udp, int tcp) {
  char buf[65536];
  for (;;) {
    ssize_t n = recv(udp, buf, sizeof buf, 0);
    if (n < 0) die("recv udp");
    for (ssize_t off = 0; off < n;) {
      ssize_t w = send(tcp, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
      if (w <= 0) die("send tcp");
      off += w;
    }
  }
}

// Both directions at once; the process ends when the TCP side closes.
[[noreturn]] void carry(int tcp, int udp) {
  std::thread(udp_to_tcp, udp, tcp).detach();
  tcp_to_udp(tcp, udp);
  std::exit(0);
}

[[noreturn]] void near(uint16_t tcp_port, const char* peer, uint16_t udp_port) {
  Fd udp = bound_udp(udp_port);
  sockaddr_in to = addr_of(peer, udp_port);
  if (connect(udp.get(), reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) die("connect udp");
  Fd lsn = loopback_listener(tcp_port);
  ready();
  Fd conn(accept4(lsn.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!conn.valid()) die("accept");
  no_delay(conn.get());
  carry(conn.get(), udp.get());
}

[[noreturn]] void far(uint16_t udp_port, uint16_t server_port) {
  Fd udp = bound_udp(udp_port);
  ready();
  char first[65536];
  sockaddr_in from{};
  socklen_t len = sizeof from;
  ssize_t n = recvfrom(udp.get(), first, sizeof first, 0, reinterpret_cast<sockaddr*>(&from), &len);
  if (n < 0) die("recv udp");
  if (connect(udp.get(), reinterpret_cast<sockaddr*>(&from), len) != 0) die("connect udp");
  Fd conn = make_socket(SOCK_STREAM);
  sockaddr_in srv = addr_of("127.0.0.1", server_port);
  if (connect(conn.get(), reinterpret_cast<sockaddr*>(&srv), sizeof srv) != 0) die("connect tcp");
  no_delay(conn.get());
  if (send(conn.get(), first, static_cast<size_t>(n), MSG_NOSIGNAL) != n) die("send tcp");
  carry(conn.get(), udp.get());
}

}  // namespace

int main(int argc, char** argv) {
  std::string_view role = argc > 1 ? argv[1] : "";
  if (role == "near" && argc == 5) near(port_arg(argv[2]), argv[3], port_arg(argv[4]));
  if (role == "far" && argc == 4) far(port_arg(argv[2]), port_arg(argv[3]));
  usage(role.empty() ? "no role given" : "wrong arguments for role '" + std::string(role) + "'");
}
