// The Hooker datagram format: pure functions, no I/O, so a fuzzer or a unit
// test can call them directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "core/abi.h"

namespace hooker::wire {

constexpr size_t kHeader = sizeof(hk_wire_hdr);
// Payload per datagram: fits a 1500-byte MTU under IPv6 (40) + UDP (8).
constexpr size_t kMaxPayload = 1400;
constexpr size_t kMaxDatagram = kHeader + kMaxPayload;

// The payload of a datagram that fits the path of a TCP connection whose
// MSS is `mss` (0: unknown, kMaxPayload). The MSS is the path's MTU less
// 40 (IPv4 + TCP) or 60 (IPv6 + TCP) and the TCP options; a UDP datagram
// costs 28 or 48: either way 12 bytes more than the MSS fit.
constexpr size_t payload_for_mss(uint32_t mss) {
  if (mss == 0 || mss + 12 >= kMaxDatagram) return kMaxPayload;
  return mss + 12 > kHeader ? mss + 12 - kHeader : 1;
}

struct Frame {
  hk_wire_type type;
  uint8_t mech = HK_MECH_UDP;
  uint64_t token = 0;   // the receiver's token
  uint64_t offset = 0;  // DATA: first byte; END: final length; ACK: delivered
  uint32_t window = 0;  // ACK only
  std::span<const std::byte> payload;  // DATA only
  uint8_t flags = 0;                   // HK_WIRE_F_*
};

enum class ParseError { kShort, kMagic, kVersion, kType, kLength };
const char* to_string(ParseError e);

// Writes the header for `f` into out[0..kHeader); the payload goes after it.
void encode_header(const Frame& f, std::byte* out);

// Parses one datagram. The payload span points into `dgram`.
struct Parsed {
  std::optional<Frame> frame;
  ParseError error{};
};
Parsed parse(std::span<const std::byte> dgram);

}  // namespace hooker::wire
