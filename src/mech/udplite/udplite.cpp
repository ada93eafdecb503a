// The `udplite` mechanism: `udp`'s framing, credit and loss handling
// (UdpMechanism, its frames naming HK_MECH_UDPLITE) over a UDP-Lite socket
// (IP protocol 136, RFC 3828) on the same port number as `udp`'s: UDP-Lite
// has a port space of its own.
//
// Its checksum covers the UDP-Lite header and the Hooker frame header only:
// a header bit flipped on the way could put bytes at the wrong offset of
// another connection, so the kernel drops such a datagram (and any whose
// sender covered less); the payload is left to the link layer's own check.
//
// Two implementations put the same datagrams on the wire: the kernel's
// UDP-Lite socket (here), or a UDP socket whose datagrams BPF programs turn
// into UDP-Lite and back (ebpf.cpp), for kernels without UDP-Lite.
#include "mech/udplite/udplite.h"

#include "core/abi.h"
#include "core/wire.h"
#include "mech/udp/udp.h"
#include "mech/udplite/ebpf.h"

namespace hooker {

namespace {
constexpr uint16_t kUdpLiteHeader = 8;
}  // namespace

DatagramProto udplite_proto() {
  DatagramProto p;
  p.protocol = IPPROTO_UDPLITE;
  p.name = "UDP-Lite";
  p.who = "/proc/net/udplite6 lists the sockets bound";
  p.coverage = kUdpLiteHeader + wire::kHeader;
  p.gso = p.gro = false;  // the kernel segments and coalesces UDP only
  return p;
}

Result<std::unique_ptr<Mechanism>> udplite_over(MechHost& host, std::unique_ptr<DatagramIo> io,
                                             const MechConfig& cfg) {
  return std::unique_ptr<Mechanism>(
      std::make_unique<UdpMechanism>(host, std::move(io), HK_MECH_UDPLITE, cfg.keepalive));
}

// Whether this kernel has UDP-Lite (built without it, or Linux 7.1 and
// later, where it is gone, the socket call fails).
static bool kernel_has_udplite() {
  Fd fd(socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, IPPROTO_UDPLITE));
  return fd.valid();
}

// --udplite-impl: kernel (a UDP-Lite socket), ebpf (ebpf.cpp), or auto:
// the kernel's where it has UDP-Lite, else BPF's.
Result<std::unique_ptr<Mechanism>> udplite_open(MechHost& host, const MechConfig& cfg) {
  bool ebpf = cfg.udplite_impl == "ebpf" ||
              (cfg.udplite_impl == "auto" && !kernel_has_udplite());
  if (ebpf) return udplite_ebpf_open(host, cfg);
  auto s = UdpSocket::open(cfg.port, udplite_proto());
  if (!s) return s.error();
  return udplite_over(host, s.take(), cfg);
}

}  // namespace hooker
