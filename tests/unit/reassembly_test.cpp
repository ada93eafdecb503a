#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <vector>

#include "core/reassembly.h"

using namespace hooker;
using Added = Reassembly::Added;

static std::vector<std::byte> bytes(size_t n, size_t seed) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; i++) v[i] = std::byte(static_cast<unsigned char>((seed + i) * 131));
  return v;
}

static std::vector<std::byte> drain(Reassembly& r) {
  auto s = r.ready();
  std::vector<std::byte> out(s.begin(), s.end());
  r.consumed(s.size());
  return out;
}

TEST(Reassembly, InOrder) {
  Reassembly r(1 << 20);
  auto a = bytes(100, 0);
  EXPECT_EQ(r.add(0, a), Added::kInOrder);
  EXPECT_EQ(drain(r), a);
  EXPECT_EQ(r.delivered(), 100u);
}

TEST(Reassembly, ShuffledDuplicatedChunksComeOutExact) {
  // 1000 chunks of varying size, delivered shuffled and with duplicates.
  std::vector<std::byte> stream = bytes(1000 * 1400, 7);
  std::vector<std::pair<uint64_t, size_t>> chunks;
  for (uint64_t off = 0; off < stream.size();) {
    size_t len = std::min<size_t>(1 + (off * 7919) % 1400, stream.size() - off);
    chunks.emplace_back(off, len);
    off += len;
  }
  auto order = chunks;
  order.insert(order.end(), chunks.begin(), chunks.begin() + 200);  // duplicates
  std::mt19937 rng(42);
  std::shuffle(order.begin(), order.end(), rng);

  Reassembly r(stream.size());
  std::vector<std::byte> out;
  size_t dups = 0;
  for (auto [off, len] : order) {
    auto a = r.add(off, std::span<const std::byte>(stream).subspan(off, len));
    if (a == Added::kDuplicate) dups++;
    auto d = drain(r);
    out.insert(out.end(), d.begin(), d.end());
  }
  EXPECT_EQ(out, stream);
  EXPECT_EQ(dups, 200u);
  EXPECT_EQ(r.buffered(), 0u);
}

TEST(Reassembly, RefusesBeyondTheGrantedLimit) {
  Reassembly r(1000);
  auto a = bytes(100, 0);
  EXPECT_EQ(r.add(950, a), Added::kBeyondWindow);
  EXPECT_EQ(r.add(900, a), Added::kBuffered);
  r.raise_limit(500);  // never lowers what was granted
  EXPECT_EQ(r.limit(), 1000u);
  r.raise_limit(2000);
  EXPECT_EQ(r.add(1900, a), Added::kBuffered);
}

TEST(Reassembly, PartialConsumeKeepsOrder) {
  Reassembly r(1 << 20);
  auto a = bytes(3000, 3);
  ASSERT_EQ(r.add(0, a), Added::kInOrder);
  std::vector<std::byte> out;
  bool added = false;
  while (!r.ready().empty()) {
    auto s = r.ready();
    size_t n = std::min<size_t>(s.size(), 7);
    out.insert(out.end(), s.begin(), s.begin() + n);
    r.consumed(n);
    // More bytes arrive while the reader is half way: they queue behind.
    if (out.size() >= 1500 && !added) {
      ASSERT_EQ(r.add(3000, bytes(10, 3003)), Added::kInOrder);
      added = true;
    }
  }
  // The late 10 bytes continue the same sequence.
  EXPECT_EQ(out, bytes(3010, 3));
}
