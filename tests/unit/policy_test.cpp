// The policy's grammar and the server's decision (hk_answer_mech, the same
// function the sock_ops program runs on each SYN).
#include <gtest/gtest.h>

#include "core/policy.h"

namespace hooker {
namespace {

TEST(Policy, PortAloneMeansUdp) {
  auto r = parse_rule("8080");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->port, 8080);
  EXPECT_EQ(r->mechs, std::vector<uint8_t>{HK_MECH_UDP});
  EXPECT_EQ(r->str(), "8080=udp");
  hk_port_rule k = r->kernel();
  EXPECT_EQ(k.accept, HK_MECH_BIT(HK_MECH_UDP));
  EXPECT_EQ(k.prefer, HK_MECH_UDP);
}

TEST(Policy, BadRulesSayWhy) {
  struct { const char* text; const char* why; } cases[] = {
      {"0", "port out of range"},          {"65536", "port out of range"},
      {"-1", "port out of range"},         {"80x", "not PORT"},
      {"", "not PORT"},                    {"=udp", "not PORT"},
      {"8080=", "unknown mechanism ''"},   {"8080=tcp", "unknown mechanism 'tcp'"},
      {"8080=udp,,udp", "unknown mechanism ''"},
      {"8080=quic:bbr", "quic:bbr: the congestion control is cc=cubic or cc=bbr"},
      {"8080=quic:cc=reno", "quic:cc=reno: the congestion control is cc=cubic or cc=bbr"},
      {"8080=quic:", "the congestion control is cc=cubic or cc=bbr"},
      {"8080=udp,udp", "udp is named twice"},
      {"8080=tcp-cc", "tcp-cc needs its options: tcp-cc:NAME"},
      {"8080=tcp-cc:", "a congestion control's name is 1 to 15"},
      {"8080=tcp-cc:sixteen_chars_xx", "a congestion control's name is 1 to 15"},
      {"8080=tcp-cc:bad/name", "a congestion control's name"},
      {"8080=tcp-cc:hk_vegas,udp", "tcp-cc stands alone in a rule"},
      {"8080=udplite,tcp-cc:hk_vegas", "tcp-cc stands alone in a rule"},
      {"8080=tcp-cc:a,tcp-cc:b", "tcp-cc is named twice"},
      {"8080=udp:cov=8", "udp takes no options (udp:cov=8)"},
      {"8080=udplite:cov=39", "udplite:cov=39: the checksum coverage is cov=N"},
      {"8080=udplite:cov=1441", "40 (its header and Hooker's) to 1440"},
      {"8080=udplite:cov=", "udplite:cov=: the checksum coverage is cov=N"},
      {"8080=udplite:cov=2OO", "the checksum coverage is cov=N"},
      {"8080=udplite:cov=-200", "the checksum coverage is cov=N"},
      {"8080=udplite:cov=99999999999", "the checksum coverage is cov=N"},
      {"8080=udplite:coverage=200", "the checksum coverage is cov=N"},
      {"8080=udplite:", "the checksum coverage is cov=N"},
      {"8080=frob:x", "unknown mechanism 'frob': use udp, udplite, quic, tcp-cc:NAME"},
  };
  for (auto& c : cases) {
    auto r = parse_rule(c.text);
    ASSERT_FALSE(r) << c.text;
    EXPECT_NE(r.error().what.find(c.why), std::string::npos) << c.text << ": " << r.error().what;
  }
}

TEST(Policy, UdpLiteIsAMechanism) {
  auto r = parse_rule("8080=udplite,udp");
  ASSERT_TRUE(r) << r.error().what;
  EXPECT_EQ(r->mechs, (std::vector<uint8_t>{HK_MECH_UDPLITE, HK_MECH_UDP}));
  EXPECT_EQ(r->str(), "8080=udplite,udp");
  hk_port_rule k = r->kernel();
  EXPECT_EQ(k.accept, HK_MECH_BIT(HK_MECH_UDP) | HK_MECH_BIT(HK_MECH_UDPLITE));
  EXPECT_EQ(k.prefer, HK_MECH_UDPLITE);
}

// quic:cc=NAME: the congestion control of the QUIC connection the rule's
// clients open; none: hookerd's --quic-cc.
TEST(Policy, QuicCongestionControlIsPerRule) {
  auto r = parse_rule("8080=quic:cc=cubic,udp");
  ASSERT_TRUE(r) << r.error().what;
  EXPECT_EQ(r->opt(HK_MECH_QUIC), "cc=cubic");
  EXPECT_EQ(r->str(), "8080=quic:cc=cubic,udp");
  EXPECT_EQ(quic_cc(r->opt(HK_MECH_QUIC)), "cubic");
  EXPECT_EQ(quic_cc("cc=bbr"), "bbr");
  EXPECT_EQ(quic_cc(""), "");
  EXPECT_EQ(quic_cc("cc=reno"), std::nullopt);
}

// udplite:cov=N: the bytes its checksum covers, per rule; the kernel's
// rule is the same as without (the coverage is the sender's business).
TEST(Policy, UdpLiteCoverageIsPerRule) {
  auto r = parse_rule("8080=udplite:cov=200,udp");
  ASSERT_TRUE(r) << r.error().what;
  EXPECT_EQ(r->opt(HK_MECH_UDPLITE), "cov=200");
  EXPECT_EQ(r->str(), "8080=udplite:cov=200,udp");
  EXPECT_EQ(parse_rule(r->str())->str(), r->str());
  EXPECT_EQ(r->kernel().prefer, HK_MECH_UDPLITE);
  EXPECT_EQ(udplite_coverage(r->opt(HK_MECH_UDPLITE)), 200);
  EXPECT_EQ(udplite_coverage(""), kLiteMinCoverage);  // the headers only
  EXPECT_EQ(udplite_coverage("cov=40"), 40);
  EXPECT_EQ(udplite_coverage("cov=1440"), 1440);
  EXPECT_EQ(udplite_coverage("cov=39"), std::nullopt);
}

// tcp-cc:NAME keeps the connection TCP: the kernel's rule asks for and
// accepts no mechanism, and carries the name for bpf_setsockopt.
TEST(Policy, TcpCcCarriesItsAlgorithmName) {
  auto r = parse_rule("8080=tcp-cc:hk_vegas");
  ASSERT_TRUE(r) << r.error().what;
  EXPECT_EQ(r->mechs, std::vector<uint8_t>{HK_MECH_TCP_CC});
  EXPECT_EQ(r->cc(), "hk_vegas");
  EXPECT_EQ(r->opt(HK_MECH_UDP), "");
  EXPECT_EQ(r->str(), "8080=tcp-cc:hk_vegas");
  EXPECT_EQ(parse_rule(r->str())->str(), r->str());
  hk_port_rule k = r->kernel();
  EXPECT_EQ(k.accept, 0);
  EXPECT_EQ(k.prefer, HK_MECH_NONE);
  EXPECT_STREQ(k.cc, "hk_vegas");
  // A SYN asking this port for any mechanism, even "tcp-cc", is refused.
  for (uint8_t m = 0; m < HK_MECH__MAX + 2; m++) EXPECT_EQ(hk_answer_mech(&k, m), HK_MECH_NONE);
  // The longest name fits with its NUL.
  auto longest = parse_rule("1=tcp-cc:fifteen_chars_x");
  ASSERT_TRUE(longest);
  EXPECT_STREQ(longest->kernel().cc, "fifteen_chars_x");
}

TEST(Policy, RulesThatMoveCarryNoAlgorithm) {
  hk_port_rule k = parse_rule("8080=udp,udplite")->kernel();
  EXPECT_EQ(k.cc[0], '\0');
  EXPECT_TRUE(parse_rule("8080=udp")->opts.empty());
}

TEST(Policy, OneRulePerPort) {
  Policy p;
  ASSERT_TRUE(p.add(*parse_rule("8000")));
  ASSERT_TRUE(p.add(*parse_rule("5201=udp")));
  auto dup = p.add(*parse_rule("8000=udp"));
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().what, "port 8000 already has a rule (8000=udp)");
  EXPECT_EQ(p.ports(), (std::vector<uint16_t>{8000, 5201}));
  EXPECT_FALSE(p.del(9999));
  ASSERT_TRUE(p.del(8000));
  EXPECT_EQ(p.ports(), std::vector<uint16_t>{5201});
}

// A server accepts the mechanism asked for when its rule names it, and
// answers HK_MECH_NONE (a refusal the client counts) otherwise, including
// for mechanisms it has never heard of.
TEST(Policy, ServerConfirmsOnlyWhatItsRuleAccepts) {
  hk_port_rule udp_only{static_cast<__u8>(HK_MECH_BIT(HK_MECH_UDP)), HK_MECH_UDP, 0, {}};
  hk_port_rule both{static_cast<__u8>(HK_MECH_BIT(HK_MECH_UDP) | HK_MECH_BIT(HK_MECH_UDPLITE)),
                    HK_MECH_UDP, 0, {}};
  EXPECT_EQ(hk_answer_mech(&udp_only, HK_MECH_UDP), HK_MECH_UDP);
  EXPECT_EQ(hk_answer_mech(&udp_only, HK_MECH_UDPLITE), HK_MECH_NONE);
  EXPECT_EQ(hk_answer_mech(&udp_only, HK_MECH_QUIC), HK_MECH_NONE);
  EXPECT_EQ(hk_answer_mech(&both, HK_MECH_UDPLITE), HK_MECH_UDPLITE);
  EXPECT_EQ(hk_answer_mech(&both, HK_MECH_NONE), HK_MECH_NONE);
  EXPECT_EQ(hk_answer_mech(&both, 200), HK_MECH_NONE);
  EXPECT_EQ(hk_answer_mech(&both, 7), HK_MECH_NONE);  // a bit beyond the known ones
}

}  // namespace
}  // namespace hooker
