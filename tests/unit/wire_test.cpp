#include <gtest/gtest.h>

#include <vector>

#include "core/wire.h"

using namespace hooker;

static std::vector<std::byte> dgram(const wire::Frame& f) {
  std::vector<std::byte> d(wire::kHeader + f.payload.size());
  wire::encode_header(f, d.data());
  std::copy(f.payload.begin(), f.payload.end(), d.begin() + wire::kHeader);
  return d;
}

TEST(Wire, DataRoundTrip) {
  std::vector<std::byte> payload(1400, std::byte{0x5a});
  auto d = dgram({HK_WIRE_DATA, HK_MECH_UDP, 0x1122334455667788ull, 1ull << 40, 0, payload});
  auto p = wire::parse(d);
  ASSERT_TRUE(p.frame) << "parse of an encoded DATA frame";
  EXPECT_EQ(p.frame->type, HK_WIRE_DATA);
  EXPECT_EQ(p.frame->token, 0x1122334455667788ull);
  EXPECT_EQ(p.frame->offset, 1ull << 40);
  ASSERT_EQ(p.frame->payload.size(), 1400u);
  EXPECT_EQ(p.frame->payload[1399], std::byte{0x5a});
}

TEST(Wire, AckCarriesWindow) {
  auto d = dgram({HK_WIRE_ACK, HK_MECH_UDP, 7, 12345, 65536, {}});
  auto p = wire::parse(d);
  ASSERT_TRUE(p.frame);
  EXPECT_EQ(p.frame->window, 65536u);
  EXPECT_EQ(p.frame->offset, 12345u);
}

TEST(Wire, RejectsMalformed) {
  std::vector<std::byte> payload(10);
  auto good = dgram({HK_WIRE_DATA, HK_MECH_UDP, 1, 0, 0, payload});

  auto shorter = good;
  shorter.resize(wire::kHeader - 1);
  EXPECT_EQ(wire::parse(shorter).error, wire::ParseError::kShort);

  auto magic = good;
  magic[0] = std::byte{0};
  EXPECT_EQ(wire::parse(magic).error, wire::ParseError::kMagic);

  auto version = good;
  version[2] = std::byte{99};
  EXPECT_EQ(wire::parse(version).error, wire::ParseError::kVersion);

  auto type = good;
  type[3] = std::byte{42};
  EXPECT_EQ(wire::parse(type).error, wire::ParseError::kType);

  auto truncated = good;
  truncated.pop_back();  // header says 10 bytes, 9 follow
  EXPECT_EQ(wire::parse(truncated).error, wire::ParseError::kLength);

  auto ack_with_payload = dgram({HK_WIRE_ACK, HK_MECH_UDP, 1, 0, 0, payload});
  EXPECT_EQ(wire::parse(ack_with_payload).error, wire::ParseError::kLength);
}
