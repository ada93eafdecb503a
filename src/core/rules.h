// The configuration file's policy rules: what a port rule cannot say. A rule
// matches a connection by destination and source prefix (the server and
// the client, whichever side looks), server port or port range and cgroup
// sub-path; its action is a mechanism list in the port rules' grammar or
// "never" (stays TCP). First match wins, in file order; the port rules
// (--redirect, hookerctl policy add) decide only what no file rule matches.
// compile_rules turns them into the kernel's table (hk_rules).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/abi.h"
#include "core/policy.h"
#include "core/result.h"

namespace hooker {

// An address prefix: "10.0.0.0/8", "fd00::/64", "192.0.2.7" (a /32).
struct Prefix {
  uint8_t family = 0;             // AF_INET or AF_INET6
  uint8_t len = 0;                // bits
  std::array<uint32_t, 4> addr{};  // network order, IPv4 in word 0
  std::array<uint32_t, 4> mask() const;
  std::string str() const;
};
// Refuses host bits past the length (10.1.0.0/8: did you mean 10.0.0.0/8?).
Result<Prefix> parse_prefix(const std::string& text);

struct PortRange {
  uint16_t lo = 1, hi = 65535;
  std::string str() const;
};
// "8080" or "9000-9100", each 1..65535, lo <= hi.
Result<PortRange> parse_port_range(const std::string& text);

struct MatchRule {
  std::vector<Prefix> dst, src;  // any of them; empty: any address
  std::optional<PortRange> ports;  // none: any port (only a "never" rule)
  std::string cgroup;              // sub-path of --cgroup; empty: any
  bool never = false;              // else `action` moves or sets tcp-cc
  PortRule action;                 // mechs and opts; its port is 0
  int line = 0;                    // where the file has it
  std::string str() const;         // one line, for policy list and logs
};

// Where a cgroup sub-path is: its id (the directory's inode) and depth
// under the cgroup v2 root.
struct CgroupRef {
  uint64_t id = 0;
  uint8_t level = 0;
};
using CgroupResolver = std::function<Result<CgroupRef>(const std::string& sub)>;

// The kernel's table: each rule once per (destination, source) pair of one
// family, in order. The error names the rule's line ("line 12: ...").
Result<hk_rules> compile_rules(const std::vector<MatchRule>& rules, const CgroupResolver& cg,
                               uint32_t gen);

// What the kernel does with the table (hk_rule_matches and the cgroup's
// ancestors), for the unit tests: the index of the first rule that matches,
// or nullopt. `ancestors` are the socket's cgroup's ids by depth.
std::optional<size_t> first_match(const hk_rules& t, uint8_t family,
                                  const std::array<uint32_t, 4>& src,
                                  const std::array<uint32_t, 4>& dst, uint16_t port,
                                  const std::vector<uint64_t>& ancestors = {});

}  // namespace hooker
