// What the floor tools (bench/floor/) share: how they fail, read their
// arguments and open their sockets. Each defines kTool, its name and usage.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "bpf/fd.h"  // the project's one Fd

namespace floor_tool {

struct Tool {
  const char* name;
  const char* usage;  // its lines, each ending in a newline
  int idle_secs;      // a blocking receive gives up after this long
};
extern const Tool kTool;

// Exit 1: a socket error, or no traffic for idle_secs.
[[noreturn]] inline void die(const std::string& what) {
  std::string why = (errno == EAGAIN || errno == EWOULDBLOCK)
                        ? "no traffic for " + std::to_string(kTool.idle_secs) + " s"
                        : std::strerror(errno);
  std::fprintf(stderr, "%s: %s: %s\n", kTool.name, what.c_str(), why.c_str());
  std::exit(1);
}

// Exit 2: bad arguments, said in one line before the usage.
[[noreturn]] inline void usage(const std::string& why) {
  std::fprintf(stderr, "%s: %s\n%s", kTool.name, why.c_str(), kTool.usage);
  std::exit(2);
}

inline unsigned number_arg(std::string_view s, unsigned max, const char* what) {
  unsigned v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || v == 0 || v > max)
    usage(std::string("not ") + what + " (1-" + std::to_string(max) + "): '" + std::string(s) +
          "'");
  return v;
}

inline uint16_t port_arg(std::string_view s) {
  return static_cast<uint16_t>(number_arg(s, 65535, "a port"));
}

inline sockaddr_in addr_of(const char* ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) usage(std::string("not an IPv4 address: ") + ip);
  return a;
}

inline void give_up_after_idle(int fd) {
  timeval idle{kTool.idle_secs, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof idle);
}

// Every blocking receive (and accept) on it gives up after idle_secs.
inline hooker::Fd make_socket(int type) {
  hooker::Fd fd(socket(AF_INET, type | SOCK_CLOEXEC, 0));
  if (!fd.valid()) die("socket");
  give_up_after_idle(fd.get());
  return fd;
}

inline hooker::Fd bound_udp(uint16_t port) {
  hooker::Fd u = make_socket(SOCK_DGRAM);
  sockaddr_in any = addr_of("0.0.0.0", port);
  if (bind(u.get(), reinterpret_cast<sockaddr*>(&any), sizeof any) != 0) die("bind udp");
  return u;
}

// A listening TCP socket on 127.0.0.1:port.
inline hooker::Fd loopback_listener(uint16_t port) {
  hooker::Fd lsn = make_socket(SOCK_STREAM);
  int one = 1;
  setsockopt(lsn.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in here = addr_of("127.0.0.1", port);
  if (bind(lsn.get(), reinterpret_cast<sockaddr*>(&here), sizeof here) != 0) die("bind tcp");
  if (listen(lsn.get(), 1) != 0) die("listen");
  return lsn;
}

// The benchmark starts its traffic when it reads this line.
inline void ready() {
  std::puts("ready");
  std::fflush(stdout);
}

}  // namespace floor_tool
