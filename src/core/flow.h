// Connection tuples as the kernel programs key them (struct hk_flow).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <functional>
#include <string>

#include "core/abi.h"
#include "core/result.h"

// Global, like hk_flow itself, so that lookup finds it. The padding is
// always zero, so the bytes are the identity.
inline bool operator==(const hk_flow& a, const hk_flow& b) {
  return std::memcmp(&a, &b, sizeof(a)) == 0;
}

namespace hooker {

struct FlowHash {
  size_t operator()(const hk_flow& f) const noexcept;
};

// The flow of a connected socket, from its own point of view.
Result<hk_flow> flow_of_socket(int fd);

// The tuple from both addresses (local first), in the kernel's layout.
hk_flow flow_from(const sockaddr_storage& local, const sockaddr_storage& remote);

// The peer's address in `f` with `port`, as an IPv6 socket address (IPv4
// mapped) for a dual-stack UDP socket.
sockaddr_in6 remote_addr(const hk_flow& f, uint16_t port);

// The same connection as seen on the wire: an IPv4-mapped IPv6 socket's
// tuple in IPv4 form. Packets (held FINs) and sockets then compare equal.
hk_flow wire_flow(const hk_flow& f);

std::string addr_str(const hk_flow& f, bool local);
std::string to_string(const hk_flow& f);
// A peer hookerd's UDP address: "10.0.0.2 port 7000" (IPv4-mapped in IPv4 form).
std::string to_string(const sockaddr_in6& a);

}  // namespace hooker
