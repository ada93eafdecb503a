// The ingress program on crafted packets (BPF_PROG_TEST_RUN), as XDP and as
// TC (the hook `--xdp-mode auto` picks on veth): every verdict and every
// drop counter, the same from both. Needs root to load BPF.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <endian.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <vector>

#include "core/abi.h"
#include "ingress.skel.h"

namespace {

constexpr uint16_t kPort = 7000;
constexpr uint64_t kLiveToken = 0x1122334455667788ull;

struct Skel {
  ingress_bpf* s = nullptr;
  ~Skel() { ingress_bpf__destroy(s); }
};

class Ingress : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "loading BPF needs root";
    skel_.s = ingress_bpf__open();
    ASSERT_TRUE(skel_.s) << "ingress_bpf__open";
    skel_.s->rodata->hk_udp_port = kPort;
    ASSERT_EQ(ingress_bpf__load(skel_.s), 0) << "ingress_bpf__load";
    hk_token t{1, HK_TOKEN_LIVE, 0};
    ASSERT_EQ(bpf_map_update_elem(bpf_map__fd(skel_.s->maps.tokens), &kLiveToken, &t, BPF_ANY), 0);
  }

  // Ethernet + IPv4/IPv6 + UDP to `dport` + the given UDP payload. Each
  // header is filled in place and copied in: after the 14-byte Ethernet
  // header the IP headers are not aligned for their types.
  static std::vector<uint8_t> packet(bool v6, uint16_t dport, const std::vector<uint8_t>& payload,
                                     uint8_t proto = IPPROTO_UDP) {
    std::vector<uint8_t> p;
    auto put = [&p](const auto& h) {
      auto* b = reinterpret_cast<const uint8_t*>(&h);
      p.insert(p.end(), b, b + sizeof(h));
    };
    ethhdr eth{};
    eth.h_proto = htons(v6 ? ETH_P_IPV6 : ETH_P_IP);
    put(eth);
    uint16_t udp_len = static_cast<uint16_t>(sizeof(udphdr) + payload.size());
    if (v6) {
      ipv6hdr ip6{};
      ip6.version = 6;
      ip6.nexthdr = proto;
      ip6.payload_len = htons(udp_len);
      put(ip6);
    } else {
      iphdr ip{};
      ip.version = 4;
      ip.ihl = 5;
      ip.protocol = proto;
      ip.tot_len = htons(static_cast<uint16_t>(sizeof(iphdr) + udp_len));
      put(ip);
    }
    udphdr udp{};
    udp.dest = htons(dport);
    udp.len = htons(udp_len);
    put(udp);
    p.insert(p.end(), payload.begin(), payload.end());
    return p;
  }

  static std::vector<uint8_t> hooker(uint64_t token, size_t payload = 100, uint16_t hdr_len = 100) {
    std::vector<uint8_t> d(sizeof(hk_wire_hdr) + payload);
    hk_wire_hdr h{};
    h.magic = htons(HK_WIRE_MAGIC);
    h.version = HK_VERSION;
    h.type = HK_WIRE_DATA;
    h.mech = HK_MECH_UDP;
    h.len = htons(hdr_len);
    h.token = htobe64(token);
    std::memcpy(d.data(), &h, sizeof(h));
    return d;
  }

  // The verdict in XDP's terms, whichever hook ran.
  int run(std::vector<uint8_t> pkt) {
    bool tc = GetParam();
    LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = pkt.data(),
                .data_size_in = static_cast<__u32>(pkt.size()), .repeat = 1);
    bpf_program* prog = tc ? skel_.s->progs.hk_ingress_tc : skel_.s->progs.hk_ingress;
    int r = bpf_prog_test_run_opts(bpf_program__fd(prog), &o);
    EXPECT_EQ(r, 0) << "bpf_prog_test_run_opts";
    if (!tc) return static_cast<int>(o.retval);
    // tcx: "next" (TC_ACT_UNSPEC) lets later programs see the packet.
    constexpr int32_t kTcxNext = -1, kTcxDrop = 2;
    int32_t v = static_cast<int32_t>(o.retval);
    return v == kTcxNext ? XDP_PASS : v == kTcxDrop ? XDP_DROP : -1000 - v;
  }

  uint64_t counter(hk_counter c) {
    int ncpu = libbpf_num_possible_cpus();
    std::vector<uint64_t> v(static_cast<size_t>(ncpu));
    __u32 k = c;
    EXPECT_EQ(bpf_map_lookup_elem(bpf_map__fd(skel_.s->maps.counters), &k, v.data()), 0);
    uint64_t sum = 0;
    for (auto x : v) sum += x;
    return sum;
  }

  Skel skel_;
};

TEST_P(Ingress, PassesLiveTokenOverBothFamilies) {
  for (bool v6 : {false, true}) EXPECT_EQ(run(packet(v6, kPort, hooker(kLiveToken))), XDP_PASS);
  EXPECT_EQ(counter(HK_CNT_XDP_PASS), 2u);
}

TEST_P(Ingress, DropsUnknownToken) {
  for (bool v6 : {false, true}) EXPECT_EQ(run(packet(v6, kPort, hooker(42))), XDP_DROP);
  EXPECT_EQ(counter(HK_CNT_XDP_UNKNOWN_TOKEN), 2u);
}

TEST_P(Ingress, DropsMalformedWithOneCounterEach) {
  EXPECT_EQ(run(packet(false, kPort, {1, 2, 3})), XDP_DROP);
  EXPECT_EQ(counter(HK_CNT_XDP_SHORT), 1u);

  auto bad_magic = hooker(kLiveToken);
  bad_magic[0] = 0;
  EXPECT_EQ(run(packet(false, kPort, bad_magic)), XDP_DROP);
  EXPECT_EQ(counter(HK_CNT_XDP_BAD_MAGIC), 1u);

  auto bad_version = hooker(kLiveToken);
  bad_version[2] = 9;
  EXPECT_EQ(run(packet(true, kPort, bad_version)), XDP_DROP);
  EXPECT_EQ(counter(HK_CNT_XDP_BAD_VERSION), 1u);

  // The header claims more payload than the datagram holds.
  EXPECT_EQ(run(packet(false, kPort, hooker(kLiveToken, 10, 1400))), XDP_DROP);
  EXPECT_EQ(counter(HK_CNT_XDP_BAD_LEN), 1u);
  EXPECT_EQ(counter(HK_CNT_XDP_PASS), 0u);
}

TEST_P(Ingress, LeavesOtherTrafficAlone) {
  EXPECT_EQ(run(packet(false, kPort + 1, hooker(42))), XDP_PASS);           // other UDP port
  EXPECT_EQ(run(packet(true, kPort, hooker(42), IPPROTO_TCP)), XDP_PASS);   // not UDP
  EXPECT_EQ(counter(HK_CNT_XDP_PASS), 0u);  // nothing counted as Hooker's
}

// The peer's pure ACK of a moved application's FIN is held while hookerd
// still owes that application bytes (a fin_guards entry). The lookup runs
// only while fin_guards_live counts a guard: traffic of other connections
// pays for no hash lookup the rest of the time.
TEST_P(Ingress, HoldsTheGuardedFinAckWhileGuardsAreCounted) {
  in_addr_t local = inet_addr("10.77.0.1"), remote = inet_addr("10.77.0.2");
  auto ack = [&](uint32_t ack_seq, uint8_t extra_flag = 0) {
    auto p = packet(false, 0, {}, IPPROTO_TCP);
    p.resize(sizeof(ethhdr) + sizeof(iphdr));
    // Copied out and back: after the 14-byte Ethernet header the IP header
    // is not aligned for its type.
    iphdr ip;
    std::memcpy(&ip, p.data() + sizeof(ethhdr), sizeof(ip));
    ip.saddr = remote;
    ip.daddr = local;
    ip.tot_len = htons(sizeof(iphdr) + sizeof(tcphdr));
    std::memcpy(p.data() + sizeof(ethhdr), &ip, sizeof(ip));
    tcphdr th{};
    th.source = htons(8080);
    th.dest = htons(40000);
    th.doff = sizeof(tcphdr) / 4;
    th.ack = 1;
    th.fin = extra_flag;
    th.ack_seq = htonl(ack_seq);
    auto* b = reinterpret_cast<const uint8_t*>(&th);
    p.insert(p.end(), b, b + sizeof(th));
    return p;
  };
  hk_flow f{};
  f.family = AF_INET;
  f.lport = 40000;
  f.rport = 8080;
  f.laddr[0] = local;
  f.raddr[0] = remote;
  hk_fin_guard g{};
  g.ack_seq = 1001;
  ASSERT_EQ(bpf_map_update_elem(bpf_map__fd(skel_.s->maps.fin_guards), &f, &g, BPF_ANY), 0);
  // Not counted (hookerd and the redirector always count one first): not
  // looked up.
  EXPECT_EQ(run(ack(1001)), XDP_PASS);
  uint32_t zero = 0;
  uint64_t one = 1;
  ASSERT_EQ(bpf_map_update_elem(bpf_map__fd(skel_.s->maps.fin_guards_live), &zero, &one,
                                BPF_ANY), 0);
  EXPECT_EQ(run(ack(1001)), XDP_DROP);
  EXPECT_EQ(counter(HK_CNT_XDP_FIN_ACK_HELD), 1u);
  EXPECT_EQ(run(ack(1000)), XDP_PASS);     // another ACK of the flow
  EXPECT_EQ(run(ack(1001, 1)), XDP_PASS);  // the peer's own FIN goes through
  EXPECT_EQ(counter(HK_CNT_XDP_FIN_ACK_HELD), 1u);
}

INSTANTIATE_TEST_SUITE_P(Hooks, Ingress, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "tc" : "xdp"; });

}  // namespace
