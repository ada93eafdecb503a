#include "app/inject.h"

#include <endian.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <span>

#include "app/conn.h"
#include "core/rst.h"

namespace hooker {

Result<Injector> Injector::open() {
  Fd v4(socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW));
  Fd v6(socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW));
  if (!v4.valid() || !v6.valid()) return sys_error("open raw sockets for TCP resets");
  return Injector(std::move(v4), std::move(v6));
}

Injector::Ends Injector::ends_of(const hk_flow& app) {
  Ends e{flow_is_v4(app), {}, {}};
  std::memcpy(e.local, app.laddr, 16);
  std::memcpy(e.remote, app.raddr, 16);
  if (e.v4) {
    e.local[0] = v4_word(app, app.laddr);
    e.remote[0] = v4_word(app, app.raddr);
  }
  return e;
}

bool Injector::send(bool v4, const uint32_t* dst, const std::vector<uint8_t>& pkt) const {
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
  int fd = v4 ? raw4_.get() : raw6_.get();
  return sendto(fd, pkt.data(), pkt.size(), 0, reinterpret_cast<sockaddr*>(&ss), len) > 0;
}

int Injector::reset(const Conn& c) const {
  Ends e = ends_of(c.app);
  int sent = 0;
  // Each end expects the other's sequence number, or one more after a FIN;
  // only the exact one resets (RFC 5961), the other is ignored.
  for (uint32_t d : {0u, 1u}) {
    // To our application, as if from the peer: delivered locally.
    sent += send(e.v4, e.local,
                 build_rst(e.v4, e.remote, c.app.rport, e.local, c.app.lport, c.rcv_nxt + d));
    // To the peer's application, as ours would send it.
    sent += send(e.v4, e.remote,
                 build_rst(e.v4, e.local, c.app.lport, e.remote, c.app.rport, c.snd_nxt + d));
  }
  return sent;
}

bool Injector::wake_writer(const Conn& c) const {
  // The Hooker option with no UDP port and the socket's own token makes the
  // sock_ops program call the socket's write-space callback (on_wake_ack in
  // bpf/redirector.bpf.c). The sequence number is one past what the socket
  // received: in its window before the peer's FIN, exact after it. The ACK
  // acknowledges exactly what the socket sent, never its FIN.
  hk_tcp_opt opt{};
  opt.kind = HK_TCPOPT_EXP;
  opt.len = HK_OPT_LEN;
  opt.exid = htons(HK_EXID);
  opt.version = HK_VERSION;
  opt.token = htobe64(c.token);
  Ends e = ends_of(c.app);
  auto bytes = std::span(reinterpret_cast<const uint8_t*>(&opt), sizeof(opt));
  return send(e.v4, e.local,
              build_ack(e.v4, e.remote, c.app.rport, e.local, c.app.lport, c.rcv_nxt + 1,
                        c.snd_nxt, bytes));
}

bool Injector::complete_handshake(const hk_flow& wire, const hk_embryo& e) const {
  // No options: with none, the request socket skips its timestamp check,
  // and the SYN's were saved at the SYN. It goes through our own stack at
  // once (loopback), so the socket is established when sendto() returns.
  Ends ends = ends_of(wire);
  return send(ends.v4, ends.local,
              build_ack(ends.v4, ends.remote, wire.rport, ends.local, wire.lport, e.seq, e.ack, {}));
}

}  // namespace hooker
