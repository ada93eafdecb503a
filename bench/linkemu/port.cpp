#include "port.h"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace linkemu {
namespace {

[[noreturn]] void fail(const std::string& ifname, const std::string& step) {
  throw Error("port " + ifname + ": " + step + ": " + std::strerror(errno));
}

}  // namespace

Port open_port(const std::string& ifname) {
  Port p;
  p.ifname = ifname;
  unsigned index = if_nametoindex(ifname.c_str());
  if (index == 0) fail(ifname, "no such interface in this network namespace");

  // Protocol 0 at creation, ETH_P_ALL at bind: the socket then never queues frames
  // from other interfaces in the instant between socket() and bind().
  p.fd = Fd(::socket(AF_PACKET, SOCK_RAW, 0));
  if (!p.fd.valid()) fail(ifname, "socket(AF_PACKET)");

  // Our own transmissions would otherwise come back to us as received frames and be
  // relayed again, forever.
  int one = 1;
  if (setsockopt(p.fd.get(), SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) < 0)
    fail(ifname, "PACKET_IGNORE_OUTGOING");

  // Bursts at line rate outrun one relay thread for a moment; a deep receive buffer
  // absorbs them instead of dropping frames the user did not ask to lose.
  int buf = 32 << 20;
  if (setsockopt(p.fd.get(), SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf) < 0)
    fail(ifname, "SO_RCVBUFFORCE");
  if (setsockopt(p.fd.get(), SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf) < 0)
    fail(ifname, "SO_SNDBUFFORCE");

  sockaddr_ll addr{};
  addr.sll_family = AF_PACKET;
  addr.sll_protocol = htons(ETH_P_ALL);
  addr.sll_ifindex = static_cast<int>(index);
  if (bind(p.fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
    fail(ifname, "bind");

  ifreq ifr{};
  std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
  if (ioctl(p.fd.get(), SIOCGIFMTU, &ifr) < 0) fail(ifname, "SIOCGIFMTU");
  p.mtu = static_cast<unsigned>(ifr.ifr_mtu);
  return p;
}

}  // namespace linkemu
