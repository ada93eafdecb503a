// The configuration file's parser and the rule compiler: what the kernel's
// table holds (first_match runs hk_rule_matches, the sock_ops program's own
// check), and the one-line errors naming file and line.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include "core/config.h"
#include "core/rules.h"

namespace hooker {
namespace {

std::array<uint32_t, 4> v4(const char* a) {
  std::array<uint32_t, 4> w{};
  inet_pton(AF_INET, a, w.data());
  return w;
}
std::array<uint32_t, 4> v6(const char* a) {
  std::array<uint32_t, 4> w{};
  inet_pton(AF_INET6, a, w.data());
  return w;
}

CgroupResolver cgroups = [](const std::string& sub) -> Result<CgroupRef> {
  if (sub == "web") return CgroupRef{4242, 2};
  return Error{"cgroup " + sub + ": no such cgroup", 0};
};

TEST(Config, EveryFlagAsAKey) {
  auto c = parse_config(R"(
cgroup = "/sys/fs/cgroup/x"
ifaces = ["eth0", "eth1"]
xdp_mode = "tc"
port = 7100
redirect = ["5201", "8080=udplite:cov=200"]
control = "/run/h.sock"
control_group = "wheel"
metrics = "9100"
pin_dir = "/sys/fs/bpf/h"
max_conns = 1024
udplite_impl = "ebpf"
keepalive = 10
udp_retry = 300
eager = true
verbose = true
log_level = "warn"
)", "h.toml");
  ASSERT_TRUE(c) << c.error().what;
  EXPECT_EQ(*c->cgroup, "/sys/fs/cgroup/x");
  EXPECT_EQ(c->ifaces->size(), 2u);
  EXPECT_EQ(*c->port, 7100);
  EXPECT_EQ(*c->max_conns, 1024u);
  EXPECT_EQ(*c->keepalive_s, 10u);
  EXPECT_EQ(*c->udp_retry_s, 300u);
  EXPECT_TRUE(*c->eager);
  EXPECT_EQ(*c->log_level, "warn");
  EXPECT_EQ(c->where("port"), "h.toml:5: ");
}

TEST(Config, BadInputIsOneLineWithFileAndLine) {
  struct { const char* text; const char* why; } cases[] = {
      {"port = \n", "h.toml:1: syntax error"},
      {"\nbogus = 1\n", "h.toml:2: unknown key 'bogus'"},
      {"port = 0\n", "h.toml:1: port 0 is out of range"},
      {"[[rule]]\nport = 70000\nmech = \"udp\"\n", "h.toml:2: port out of range"},
      {"[[rule]]\nport = \"9-3\"\nmech = \"udp\"\n", "h.toml:2: bad port range '9-3'"},
      {"[[rule]]\nport = 80\ndst = \"10.0.0.1/8\"\nmech = \"udp\"\n", "h.toml:3: dst: bad prefix"},
      {"[[rule]]\nport = 80\nsrc = \"nope\"\nmech = \"udp\"\n", "h.toml:3: src: bad prefix 'nope'"},
      {"[[rule]]\nport = 80\nmech = \"tcp\"\n", "h.toml:3: mech: unknown mechanism 'tcp'"},
      {"[[rule]]\nport = 80\n", "h.toml:1: [[rule]] without mech"},
      {"[[rule]]\nmech = \"udp\"\n", "h.toml:1: a rule that moves names its server port"},
      {"[[rule]]\nport = 80\ncgroup = \"../x\"\nmech = \"udp\"\n", "h.toml:3: cgroup '../x'"},
      {"[[rule]]\nport = 80\nmech = \"udp\"\nfoo = 1\n", "h.toml:4: unknown key 'foo' in [[rule]]"},
      {"xdp_mode = \"fast\"\n", "h.toml:1: xdp_mode fast: use auto"},
      {"eager = \"yes\"\n", "h.toml:1: eager is a string: it takes true or false"},
      {"\nlog_level = \"loud\"\n", "h.toml:2: log level 'loud': use error, warn, info or debug"},
      {"keepalive = 0\n", "h.toml:1: keepalive 0 is out of range: use 1..86400 (seconds)"},
      {"udp_retry = 100000\n", "h.toml:1: udp_retry 100000 is out of range"},
  };
  for (auto& c : cases) {
    auto r = parse_config(c.text, "h.toml");
    ASSERT_FALSE(r) << c.text;
    EXPECT_EQ(r.error().what.find(c.why), 0u) << r.error().what;
    EXPECT_EQ(r.error().what.find('\n'), std::string::npos) << r.error().what;
  }
}

TEST(Rules, FirstMatchWinsAndNeverStaysTcp) {
  auto c = parse_config(R"(
[[rule]]
src = "10.1.0.0/16"
mech = "never"
[[rule]]
port = "9000-9100"
dst = ["10.0.0.0/8", "fd00::/64"]
mech = "udplite:cov=200,udp"
[[rule]]
port = 8080
cgroup = "web"
mech = "udp"
)", "h.toml");
  ASSERT_TRUE(c) << c.error().what;
  auto t = compile_rules(c->rules, cgroups, 7);
  ASSERT_TRUE(t) << t.error().what;
  ASSERT_EQ(t->n, 4u);  // the second rule once per destination
  EXPECT_EQ(t->gen, 7u);
  EXPECT_EQ(t->flags, HK_RULES_CGROUP);
  // The never rule first, whatever the port.
  auto m = first_match(*t, AF_INET, v4("10.1.2.3"), v4("10.9.9.9"), 9050);
  ASSERT_TRUE(m);
  EXPECT_EQ(*m, 0u);
  EXPECT_EQ(t->rule[0].action.accept, 0);
  // Prefixes and the range, IPv4 and IPv6.
  m = first_match(*t, AF_INET, v4("10.2.0.1"), v4("10.9.9.9"), 9100);
  ASSERT_TRUE(m);
  EXPECT_EQ(t->rule[*m].ref, 2);
  EXPECT_EQ(t->rule[*m].action.prefer, HK_MECH_UDPLITE);
  m = first_match(*t, AF_INET6, v6("fd01::1"), v6("fd00::7"), 9000);
  ASSERT_TRUE(m);
  EXPECT_EQ(t->rule[*m].ref, 2);
  EXPECT_FALSE(first_match(*t, AF_INET6, v6("fd01::1"), v6("fd01::7"), 9000));
  EXPECT_FALSE(first_match(*t, AF_INET, v4("10.2.0.1"), v4("11.0.0.1"), 9000));
  EXPECT_FALSE(first_match(*t, AF_INET, v4("10.2.0.1"), v4("10.0.0.1"), 9101));
  // The cgroup: the rule's or under it (its ancestor at the rule's depth).
  EXPECT_FALSE(first_match(*t, AF_INET, v4("10.2.0.1"), v4("11.0.0.1"), 8080, {1, 7, 99}));
  m = first_match(*t, AF_INET, v4("10.2.0.1"), v4("11.0.0.1"), 8080, {1, 7, 4242, 5000});
  ASSERT_TRUE(m);
  EXPECT_EQ(t->rule[*m].ref, 3);
}

TEST(Rules, CompileRefusesWhatCanNeverMatch) {
  MatchRule r;
  r.ports = PortRange{80, 80};
  r.action.mechs = {HK_MECH_UDP};
  r.line = 12;
  r.dst = {*parse_prefix("10.0.0.0/8")};
  r.src = {*parse_prefix("fd00::/8")};
  auto t = compile_rules({r}, cgroups, 1);
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().what.find("line 12: no destination and source of the same family"), 0u);
  r.src.clear();
  r.cgroup = "nope";
  t = compile_rules({r}, cgroups, 1);
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().what, "line 12: cgroup nope: no such cgroup");
}

TEST(Rules, Prefixes) {
  EXPECT_EQ(parse_prefix("10.0.0.0/8")->str(), "10.0.0.0/8");
  EXPECT_EQ(parse_prefix("192.0.2.7")->str(), "192.0.2.7/32");
  EXPECT_EQ(parse_prefix("fd00::/64")->str(), "fd00::/64");
  EXPECT_EQ(parse_prefix("::/0")->len, 0);
  EXPECT_FALSE(parse_prefix("10.0.0.0/33"));
  EXPECT_FALSE(parse_prefix("10.0.0.0/x"));
  EXPECT_NE(parse_prefix("10.1.0.0/8").error().what.find("did you mean 10.0.0.0/8?"),
            std::string::npos);
}

}  // namespace
}  // namespace hooker
