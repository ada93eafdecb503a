// udplite's BPF implementation (bpf/udplite.bpf.c) on crafted packets
// (BPF_PROG_TEST_RUN): the egress program makes UDP from the internal port
// into UDP-Lite whose checksum this file computes on its own, the ingress
// program takes it back, and every drop is counted under its reason.
// IPv4 and IPv6. Needs root to load BPF.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <unistd.h>

#include <cstring>
#include <vector>

extern "C" {
#include "udplite_abi.h"
}
#include "udplite.skel.h"

namespace {

constexpr uint16_t kPort = 7000, kInner = 41000, kPeer = 7000;
constexpr int32_t kTcxNext = -1, kTcxDrop = 2;
constexpr size_t kEth = sizeof(ethhdr);

struct Pkt {
  std::vector<uint8_t> b;
  bool v6;
  size_t l4() const { return kEth + (v6 ? sizeof(ipv6hdr) : sizeof(iphdr)); }
  uint8_t proto() const { return v6 ? b[kEth + 6] : b[kEth + 9]; }
  uint16_t u16(size_t off) const { return static_cast<uint16_t>(b[off] << 8 | b[off + 1]); }
  uint16_t sport() const { return u16(l4()); }
  uint16_t dport() const { return u16(l4() + 2); }
  uint16_t len_field() const { return u16(l4() + 4); }
  uint16_t check() const { return u16(l4() + 6); }
  size_t l4_len() const { return b.size() - l4(); }
};

// One's complement sum of big-endian 16-bit words, an odd byte padded.
uint32_t sum16(const uint8_t* p, size_t n, uint32_t s = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) s += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (n & 1) s += static_cast<uint32_t>(p[n - 1] << 8);
  return s;
}
uint16_t fold(uint32_t s) {
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return static_cast<uint16_t>(s);
}

// The UDP-Lite sum over pseudo-header and `cov` bytes: 0xffff when right.
uint16_t lite_sum(const Pkt& p, size_t cov) {
  uint32_t s;
  size_t len = p.l4_len();
  if (p.v6) {
    s = sum16(&p.b[kEth + 8], 32);
    s += static_cast<uint32_t>(len >> 16) + (len & 0xffff) + HK_LITE_PROTO;
  } else {
    s = sum16(&p.b[kEth + 12], 8) + HK_LITE_PROTO + static_cast<uint32_t>(len);
  }
  return fold(sum16(&p.b[p.l4()], cov, s));
}

bool ipv4_header_ok(const Pkt& p) { return p.v6 || fold(sum16(&p.b[kEth], 20)) == 0xffff; }

// Ethernet, IPv4 (header checksum right) or IPv6, then an L4 header.
Pkt packet(bool v6, uint8_t proto, uint16_t sport, uint16_t dport, size_t payload,
           int len_field = -1) {
  Pkt p{{}, v6};
  auto put = [&p](const auto& h) {
    auto* b = reinterpret_cast<const uint8_t*>(&h);
    p.b.insert(p.b.end(), b, b + sizeof(h));
  };
  ethhdr eth{};
  eth.h_proto = htons(v6 ? ETH_P_IPV6 : ETH_P_IP);
  put(eth);
  uint16_t l4_len = static_cast<uint16_t>(sizeof(udphdr) + payload);
  if (v6) {
    ipv6hdr ip6{};
    ip6.version = 6;
    ip6.nexthdr = proto;
    ip6.hop_limit = 64;
    ip6.payload_len = htons(l4_len);
    inet_pton(AF_INET6, "fd77::1", &ip6.saddr);
    inet_pton(AF_INET6, "fd77::2", &ip6.daddr);
    put(ip6);
  } else {
    iphdr ip{};
    ip.version = 4;
    ip.ihl = 5;
    ip.ttl = 64;
    ip.protocol = proto;
    ip.tot_len = htons(static_cast<uint16_t>(sizeof(iphdr) + l4_len));
    ip.saddr = inet_addr("10.77.0.1");
    ip.daddr = inet_addr("10.77.0.2");
    put(ip);
    uint16_t c = static_cast<uint16_t>(~fold(sum16(&p.b[kEth], sizeof(iphdr))));
    p.b[kEth + 10] = static_cast<uint8_t>(c >> 8);
    p.b[kEth + 11] = static_cast<uint8_t>(c);
  }
  udphdr udp{};
  udp.source = htons(sport);
  udp.dest = htons(dport);
  udp.len = htons(static_cast<uint16_t>(len_field >= 0 ? len_field : l4_len));
  put(udp);
  for (size_t i = 0; i < payload; i++) p.b.push_back(static_cast<uint8_t>(i * 7 + 1));
  return p;
}

// A UDP-Lite datagram to kPort with a right checksum over `cov` (0: all).
Pkt lite(bool v6, size_t payload, uint16_t cov) {
  Pkt p = packet(v6, HK_LITE_PROTO, kPeer, kPort, payload, cov);
  size_t n = cov && cov < p.l4_len() ? cov : p.l4_len();  // a bad one: as far as it goes
  uint16_t c = static_cast<uint16_t>(~lite_sum(p, n));
  p.b[p.l4() + 6] = static_cast<uint8_t>(c >> 8);
  p.b[p.l4() + 7] = static_cast<uint8_t>(c);
  return p;
}

struct Skel {
  udplite_bpf* s = nullptr;
  ~Skel() { udplite_bpf__destroy(s); }
};

class LiteBpfTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "loading BPF needs root";
    skel_.s = udplite_bpf__open();
    ASSERT_TRUE(skel_.s) << "udplite_bpf__open";
    skel_.s->rodata->hk_port = kPort;
    skel_.s->rodata->hk_inner_port = kInner;
    ASSERT_EQ(udplite_bpf__load(skel_.s), 0) << "udplite_bpf__load";
  }

  // Runs a program on `p`; returns its verdict and leaves what came out in p.
  int32_t run(bpf_program* prog, Pkt& p) {
    std::vector<uint8_t> out(p.b.size() + 256);
    LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = p.b.data(), .data_out = out.data(),
                .data_size_in = static_cast<__u32>(p.b.size()),
                .data_size_out = static_cast<__u32>(out.size()), .repeat = 1);
    EXPECT_EQ(bpf_prog_test_run_opts(bpf_program__fd(prog), &o), 0) << "bpf_prog_test_run_opts";
    out.resize(o.data_size_out);
    p.b = out;
    return static_cast<int32_t>(o.retval);
  }
  int32_t egress(Pkt& p) { return run(skel_.s->progs.hk_lite_egress, p); }
  int32_t ingress(Pkt& p) { return run(skel_.s->progs.hk_lite_ingress, p); }

  uint64_t counter(hk_lite_counter c) {
    int ncpu = libbpf_num_possible_cpus();
    std::vector<uint64_t> v(static_cast<size_t>(ncpu));
    __u32 k = c;
    EXPECT_EQ(bpf_map_lookup_elem(bpf_map__fd(skel_.s->maps.lite_counters), &k, v.data()), 0);
    uint64_t sum = 0;
    for (auto x : v) sum += x;
    return sum;
  }

  Skel skel_;
};

TEST_P(LiteBpfTest, EgressMakesUdpLiteWithItsChecksum) {
  Pkt p = packet(GetParam(), IPPROTO_UDP, kInner, kPeer, 32 + 1000);
  ASSERT_EQ(egress(p), kTcxNext);
  EXPECT_EQ(p.proto(), HK_LITE_PROTO);
  EXPECT_TRUE(ipv4_header_ok(p));
  EXPECT_EQ(p.sport(), kPort);
  EXPECT_EQ(p.dport(), kPeer);
  EXPECT_EQ(p.len_field(), HK_LITE_COVERAGE);
  EXPECT_NE(p.check(), 0);
  EXPECT_EQ(lite_sum(p, HK_LITE_COVERAGE), 0xffff);
  EXPECT_EQ(counter(HK_LITE_OUT), 1u);
}

// udplite:cov=N: a connection with an entry in lite_coverage (by the token
// its frames carry) leaves covered that far, or whole when its datagram is
// shorter; the ingress takes it; without the entry, the headers again.
TEST_P(LiteBpfTest, EgressCoversWhatTheConnectionsRuleSays) {
  bool v6 = GetParam();
  int map = bpf_map__fd(skel_.s->maps.lite_coverage);
  auto token_of = [](const Pkt& p) {
    uint64_t t;
    std::memcpy(&t, &p.b[p.l4() + 8 + HK_LITE_TOKEN_AT], sizeof(t));
    return t;
  };
  struct Case { size_t payload; uint16_t rule, want_len; };
  for (auto [payload, rule, want_len] : {Case{32 + 1000, 200, 200}, Case{32 + 1000, 201, 201},
                                         Case{32 + 300, 1440, 8 + 32 + 300},
                                         Case{32 + 1400, 1440, 1440}}) {
    SCOPED_TRACE("cov=" + std::to_string(rule) + ", " + std::to_string(payload) + " bytes");
    Pkt p = packet(v6, IPPROTO_UDP, kInner, kPort, payload);
    uint64_t token = token_of(p);
    ASSERT_EQ(bpf_map_update_elem(map, &token, &rule, BPF_ANY), 0);
    ASSERT_EQ(egress(p), kTcxNext);
    EXPECT_EQ(p.proto(), HK_LITE_PROTO);
    EXPECT_TRUE(ipv4_header_ok(p));
    EXPECT_EQ(p.len_field(), want_len);
    EXPECT_EQ(lite_sum(p, want_len), 0xffff);
    Pkt flipped = p;
    flipped.b[flipped.l4() + want_len - 1] ^= 0x04;  // the last byte covered
    EXPECT_EQ(ingress(flipped), kTcxDrop);
    EXPECT_EQ(ingress(p), kTcxNext);
    ASSERT_EQ(bpf_map_delete_elem(map, &token), 0);
  }
  Pkt p = packet(v6, IPPROTO_UDP, kInner, kPort, 32 + 1000);
  ASSERT_EQ(egress(p), kTcxNext);
  EXPECT_EQ(p.len_field(), HK_LITE_COVERAGE);
  EXPECT_EQ(counter(HK_LITE_OUT), 5u);
  EXPECT_EQ(counter(HK_LITE_IN_BAD_CHECKSUM), 4u);
}

TEST_P(LiteBpfTest, IngressTakesEgressOutputBackAsUdp) {
  Pkt p = packet(GetParam(), IPPROTO_UDP, kInner, kPort, 32 + 500);
  std::vector<uint8_t> payload(p.b.begin() + static_cast<long>(p.l4() + 8), p.b.end());
  ASSERT_EQ(egress(p), kTcxNext);
  ASSERT_EQ(ingress(p), kTcxNext);
  EXPECT_EQ(p.proto(), IPPROTO_UDP);
  EXPECT_TRUE(ipv4_header_ok(p));
  EXPECT_EQ(p.sport(), kPort);
  EXPECT_EQ(p.dport(), kInner);
  EXPECT_EQ(p.len_field(), 8 + 32 + 500);
  EXPECT_EQ(p.check(), 0);
  EXPECT_EQ(std::vector<uint8_t>(p.b.begin() + static_cast<long>(p.l4() + 8), p.b.end()),
            payload);
  EXPECT_EQ(counter(HK_LITE_IN), 1u);
}

TEST_P(LiteBpfTest, NotOursIsLeftUntouched) {
  Pkt udp = packet(GetParam(), IPPROTO_UDP, kInner + 1, kPeer, 100);
  auto before = udp.b;
  EXPECT_EQ(egress(udp), kTcxNext);
  EXPECT_EQ(udp.b, before);
  Pkt other = lite(GetParam(), 100, 40);
  other.b[other.l4() + 2] ^= 1;  // another UDP-Lite port
  before = other.b;
  EXPECT_EQ(ingress(other), kTcxNext);
  EXPECT_EQ(other.b, before);
  Pkt udp_in = packet(GetParam(), IPPROTO_UDP, kPeer, kPort, 100);  // `udp`'s
  before = udp_in.b;
  EXPECT_EQ(ingress(udp_in), kTcxNext);
  EXPECT_EQ(udp_in.b, before);
  EXPECT_EQ(counter(HK_LITE_OUT) + counter(HK_LITE_IN), 0u);
}

TEST_P(LiteBpfTest, EgressDropsWhatCannotBeCovered) {
  Pkt p = packet(GetParam(), IPPROTO_UDP, kInner, kPeer, 20);
  EXPECT_EQ(egress(p), kTcxDrop);
  EXPECT_EQ(counter(HK_LITE_OUT_SHORT), 1u);
}

TEST_P(LiteBpfTest, IngressChecksCoverageAndChecksum) {
  bool v6 = GetParam();
  Pkt good = lite(v6, 32 + 300, 40);
  EXPECT_EQ(ingress(good), kTcxNext);
  Pkt whole = lite(v6, 32 + 1400, 0);  // 0: the whole datagram, six chunks
  EXPECT_EQ(ingress(whole), kTcxNext);
  Pkt odd = lite(v6, 32 + 301, 8 + 32 + 301);  // an odd length, covered whole
  EXPECT_EQ(ingress(odd), kTcxNext);
  EXPECT_EQ(counter(HK_LITE_IN), 3u);

  Pkt payload_flip = lite(v6, 32 + 300, 40);
  payload_flip.b[payload_flip.l4() + 40 + 7] ^= 0x10;  // outside the coverage
  EXPECT_EQ(ingress(payload_flip), kTcxNext);
  Pkt header_flip = lite(v6, 32 + 300, 40);
  header_flip.b[header_flip.l4() + 8 + 23] ^= 0x01;  // the frame's offset
  EXPECT_EQ(ingress(header_flip), kTcxDrop);
  Pkt whole_flip = lite(v6, 32 + 1400, 0);
  whole_flip.b.back() ^= 0x80;
  EXPECT_EQ(ingress(whole_flip), kTcxDrop);
  Pkt zero = lite(v6, 32 + 300, 40);
  zero.b[zero.l4() + 6] = zero.b[zero.l4() + 7] = 0;
  EXPECT_EQ(ingress(zero), kTcxDrop);
  EXPECT_EQ(counter(HK_LITE_IN_BAD_CHECKSUM), 3u);

  Pkt tiny = lite(v6, 32 + 300, 4);
  EXPECT_EQ(ingress(tiny), kTcxDrop);
  Pkt past = lite(v6, 32 + 300, 8 + 32 + 301);
  EXPECT_EQ(ingress(past), kTcxDrop);
  EXPECT_EQ(counter(HK_LITE_IN_BAD_COVERAGE), 2u);
  Pkt header_only = lite(v6, 32 + 300, 8);
  EXPECT_EQ(ingress(header_only), kTcxDrop);
  EXPECT_EQ(counter(HK_LITE_IN_LOW_COVERAGE), 1u);
  Pkt jumbo = lite(v6, 32 + 1600, 0);  // past what the program sums
  EXPECT_EQ(ingress(jumbo), kTcxDrop);
  EXPECT_EQ(counter(HK_LITE_IN_TOO_LONG), 1u);
  EXPECT_EQ(counter(HK_LITE_IN), 4u);
}

INSTANTIATE_TEST_SUITE_P(Family, LiteBpfTest, ::testing::Bool(),
                         [](const auto& i) { return i.param ? "ipv6" : "ipv4"; });

}  // namespace
