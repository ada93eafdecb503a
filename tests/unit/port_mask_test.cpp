// hk_port_mask as hookerd keeps it: every port a rule names has its bit
// while the rule is in the kernel, and a port no rule names has none (its
// handshakes leave at once). Needs root (a BPF map).
#include "bpf/port_mask.h"

#include <bpf/bpf.h>
#include <gtest/gtest.h>

#include <cstring>

#include "bpf/fd.h"

namespace hooker {
namespace {

class PortMaskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LIBBPF_OPTS(bpf_map_create_opts, o, .map_flags = BPF_F_MMAPABLE);
    map_ = Fd(bpf_map_create(BPF_MAP_TYPE_ARRAY, "hk_mask_test", 4, sizeof(hk_port_mask), 1, &o));
    ASSERT_TRUE(map_.valid()) << "bpf_map_create: " << std::strerror(errno) << " (root?)";
    auto m = PortMask::of(map_.get());
    ASSERT_TRUE(m) << m.error().message();
    mask_ = m.take();
  }
  // What the BPF program reads, through the map, not the mapping.
  bool named(uint16_t port) {
    hk_port_mask m;
    __u32 zero = 0;
    EXPECT_EQ(bpf_map_lookup_elem(map_.get(), &zero, &m), 0);
    return (m.bits[port >> 6] >> (port & 63)) & 1;
  }
  static hk_rules file(std::initializer_list<std::pair<uint16_t, uint16_t>> ranges) {
    hk_rules t{};
    for (auto [lo, hi] : ranges) {
      t.rule[t.n].port_lo = lo;
      t.rule[t.n].port_hi = hi;
      t.n++;
    }
    return t;
  }
  Fd map_;
  PortMask mask_;
};

TEST_F(PortMaskTest, PortRulesSetTheirBitOnlyWhileTheyHold) {
  EXPECT_FALSE(named(8000));
  mask_.add_port(8000);
  mask_.add_port(65535);
  EXPECT_TRUE(named(8000));
  EXPECT_TRUE(named(65535));
  EXPECT_FALSE(named(8001));
  EXPECT_FALSE(named(7999));
  mask_.drop_port(8000);
  EXPECT_FALSE(named(8000));
  EXPECT_TRUE(named(65535));
}

TEST_F(PortMaskTest, FileRangesWidenBeforeTheSwapAndNarrowAfter) {
  mask_.add_port(80);
  auto old_file = file({{9000, 9010}});
  mask_.widen(old_file);
  mask_.set_file(old_file);
  auto new_file = file({{1, 1}, {9005, 9100}});
  mask_.widen(new_file);
  // Between the two, a handshake may read either table: both sets of ports.
  for (uint16_t p : {uint16_t{1}, uint16_t{80}, uint16_t{9000}, uint16_t{9100}})
    EXPECT_TRUE(named(p)) << p;
  mask_.set_file(new_file);
  EXPECT_FALSE(named(9000)) << "the old table's port outlived it";
  for (uint16_t p : {uint16_t{1}, uint16_t{80}, uint16_t{9005}, uint16_t{9100}})
    EXPECT_TRUE(named(p)) << p;
  EXPECT_FALSE(named(9101));
  mask_.set_file(file({}));
  EXPECT_FALSE(named(9005));
  EXPECT_TRUE(named(80)) << "a port rule lost its bit with the file";
}

}  // namespace
}  // namespace hooker
