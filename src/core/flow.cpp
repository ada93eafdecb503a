#include "core/flow.h"

#include <arpa/inet.h>

namespace hooker {

size_t FlowHash::operator()(const hk_flow& f) const noexcept {
  // FNV-1a over the bytes: the struct has explicit padding kept zero.
  const auto* p = reinterpret_cast<const unsigned char*>(&f);
  size_t h = 1469598103934665603ull;
  for (size_t i = 0; i < sizeof(f); i++) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

static void put(const sockaddr_storage& ss, __u32 addr[4], __u16& port) {
  if (ss.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(ss);
    addr[0] = in.sin_addr.s_addr;
    port = ntohs(in.sin_port);
  } else {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(ss);
    std::memcpy(addr, &in6.sin6_addr, 16);
    port = ntohs(in6.sin6_port);
  }
}

hk_flow flow_from(const sockaddr_storage& local, const sockaddr_storage& remote) {
  hk_flow f{};
  f.family = local.ss_family;
  put(local, f.laddr, f.lport);
  put(remote, f.raddr, f.rport);
  return f;
}

Result<hk_flow> flow_of_socket(int fd) {
  sockaddr_storage l{}, r{};
  socklen_t ll = sizeof(l), rl = sizeof(r);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&l), &ll) < 0)
    return sys_error("getsockname");
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&r), &rl) < 0)
    return sys_error("getpeername");
  return flow_from(l, r);
}

sockaddr_in6 remote_addr(const hk_flow& f, uint16_t port) {
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_port = htons(port);
  if (f.family == AF_INET) {
    a.sin6_addr.s6_addr[10] = 0xff;
    a.sin6_addr.s6_addr[11] = 0xff;
    std::memcpy(&a.sin6_addr.s6_addr[12], &f.raddr[0], 4);
  } else {
    std::memcpy(&a.sin6_addr, f.raddr, 16);
  }
  return a;
}

static bool v4_mapped(const __u32 a[4]) {
  return a[0] == 0 && a[1] == 0 && a[2] == htonl(0xffff);
}

hk_flow wire_flow(const hk_flow& f) {
  if (f.family != AF_INET6 || !v4_mapped(f.laddr) || !v4_mapped(f.raddr)) return f;
  hk_flow w{};
  w.family = AF_INET;
  w.lport = f.lport;
  w.rport = f.rport;
  w.laddr[0] = f.laddr[3];
  w.raddr[0] = f.raddr[3];
  return w;
}

std::string addr_str(const hk_flow& f, bool local) {
  char buf[INET6_ADDRSTRLEN] = {};
  const __u32* a = local ? f.laddr : f.raddr;
  inet_ntop(f.family == AF_INET ? AF_INET : AF_INET6, a, buf, sizeof(buf));
  return buf;
}

std::string to_string(const hk_flow& f) {
  auto ep = [&](bool local) {
    std::string a = addr_str(f, local);
    std::string p = std::to_string(local ? f.lport : f.rport);
    return f.family == AF_INET6 ? "[" + a + "]:" + p : a + ":" + p;
  };
  return ep(true) + " -> " + ep(false);
}

std::string to_string(const sockaddr_in6& a) {
  char b[INET6_ADDRSTRLEN] = "?";
  if (IN6_IS_ADDR_V4MAPPED(&a.sin6_addr))
    inet_ntop(AF_INET, a.sin6_addr.s6_addr + 12, b, sizeof(b));
  else
    inet_ntop(AF_INET6, &a.sin6_addr, b, sizeof(b));
  return std::string(b) + " port " + std::to_string(ntohs(a.sin6_port));
}

}  // namespace hooker
