#include "app/reset.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

#include "app/conn.h"
#include "core/rst.h"

namespace hooker {

Result<RstInjector> RstInjector::open() {
  Fd v4(socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW));
  Fd v6(socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW));
  if (!v4.valid() || !v6.valid()) return sys_error("open raw sockets for TCP resets");
  return RstInjector(std::move(v4), std::move(v6));
}

int RstInjector::reset(const Conn& c) const {
  bool v4 = flow_is_v4(c.app);
  int fd = v4 ? raw4_.get() : raw6_.get();
  uint32_t local[4], remote[4];
  std::memcpy(local, c.app.laddr, 16);
  std::memcpy(remote, c.app.raddr, 16);
  if (v4) {
    local[0] = v4_word(c.app, c.app.laddr);
    remote[0] = v4_word(c.app, c.app.raddr);
  }
  int sent = 0;
  auto send_to = [&](const uint32_t* dst, const std::vector<uint8_t>& pkt) {
    sockaddr_storage ss{};
    socklen_t len;
    if (v4) {
      auto& a = reinterpret_cast<sockaddr_in&>(ss);
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = dst[0];
      len = sizeof(a);
    } else {
      auto& a = reinterpret_cast<sockaddr_in6&>(ss);
      a.sin6_family = AF_INET6;
      std::memcpy(&a.sin6_addr, dst, 16);
      len = sizeof(a);
    }
    if (sendto(fd, pkt.data(), pkt.size(), 0, reinterpret_cast<sockaddr*>(&ss), len) > 0) sent++;
  };
  // Each end expects the other's sequence number, or one more after a FIN;
  // only the exact one resets (RFC 5961), the other is ignored.
  for (uint32_t d : {0u, 1u}) {
    // To our application, as if from the peer: delivered locally.
    send_to(local, build_rst(v4, remote, c.app.rport, local, c.app.lport, c.rcv_nxt + d));
    // To the peer's application, as ours would send it.
    send_to(remote, build_rst(v4, local, c.app.lport, remote, c.app.rport, c.snd_nxt + d));
  }
  return sent;
}

}  // namespace hooker
