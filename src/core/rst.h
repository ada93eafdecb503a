// TCP segments hookerd injects into one end of a moved connection, built by
// hand: an RST that ends it, and an ACK that wakes its writer.
//
// A moved connection carries no TCP payload, so each end's sequence numbers
// stay where the handshake left them (plus one for a FIN). hookerd knows them
// from the established callback, and can end a connection the way TCP would:
// an RST with the exact expected sequence number, which the kernel accepts
// (RFC 5961) and turns into ECONNRESET for the application.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/abi.h"

namespace hooker {

// The IP packet (IPv4 or IPv6 header + TCP header) of an RST travelling from
// `from` (address, port) to `to`, with sequence number `seq`. Addresses are
// taken from an hk_flow's raddr/laddr arrays; `v4` selects the IPv4 header
// (also for IPv4-mapped IPv6 sockets, whose packets are IPv4).
std::vector<uint8_t> build_rst(bool v4, const uint32_t from_addr[4], uint16_t from_port,
                               const uint32_t to_addr[4], uint16_t to_port, uint32_t seq);

// The IP packet of an ACK from `from` to `to` (seq, ack, a window of 64 KB)
// carrying `options` (a multiple of 4 bytes, at most 40).
std::vector<uint8_t> build_ack(bool v4, const uint32_t from_addr[4], uint16_t from_port,
                               const uint32_t to_addr[4], uint16_t to_port, uint32_t seq,
                               uint32_t ack, std::span<const uint8_t> options);

// True if the flow's packets are IPv4 on the wire.
bool flow_is_v4(const hk_flow& f);

// The IPv4 address word of a flow address (IPv4 or IPv4-mapped).
uint32_t v4_word(const hk_flow& f, const uint32_t addr[4]);

}  // namespace hooker
