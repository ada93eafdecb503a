#include "core/wire.h"

#include <endian.h>

#include <cstring>

namespace hooker::wire {

const char* to_string(ParseError e) {
  switch (e) {
    case ParseError::kShort: return "short";
    case ParseError::kMagic: return "bad_magic";
    case ParseError::kVersion: return "bad_version";
    case ParseError::kType: return "bad_type";
    case ParseError::kLength: return "bad_length";
  }
  return "?";
}

void encode_header(const Frame& f, std::byte* out) {
  hk_wire_hdr h{};
  h.magic = htobe16(HK_WIRE_MAGIC);
  h.version = HK_VERSION;
  h.type = f.type;
  h.mech = f.mech;
  h.flags = f.flags;
  h.len = htobe16(static_cast<uint16_t>(f.payload.size()));
  h.token = htobe64(f.token);
  h.offset = htobe64(f.offset);
  h.window = htobe32(f.window);
  std::memcpy(out, &h, sizeof(h));
}

Parsed parse(std::span<const std::byte> d) {
  if (d.size() < kHeader) return {std::nullopt, ParseError::kShort};
  hk_wire_hdr h;
  std::memcpy(&h, d.data(), sizeof(h));
  if (be16toh(h.magic) != HK_WIRE_MAGIC) return {std::nullopt, ParseError::kMagic};
  if (h.version != HK_VERSION) return {std::nullopt, ParseError::kVersion};
  if (h.type < HK_WIRE_DATA || h.type > HK_WIRE_RESET)
    return {std::nullopt, ParseError::kType};
  size_t len = be16toh(h.len);
  // Exactly one frame per datagram: a length that disagrees is malformed.
  if (len > kMaxPayload || kHeader + len != d.size() ||
      (h.type != HK_WIRE_DATA && len != 0))
    return {std::nullopt, ParseError::kLength};
  Frame f{static_cast<hk_wire_type>(h.type), h.mech, be64toh(h.token),
          be64toh(h.offset), be32toh(h.window), d.subspan(kHeader, len), h.flags};
  return {f, {}};
}

}  // namespace hooker::wire
