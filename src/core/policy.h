// The policy: which server TCP ports move, and onto which mechanisms. One
// grammar for `--redirect` and `hookerctl policy add`:
// PORT[=MECH[:OPTS][,MECH[:OPTS]...]], PORT alone meaning udp. The first
// mechanism is what this host asks for as a client; all of them are what it
// accepts as a server (hk_port_rule). OPTS are the mechanism's own, checked
// by its entry in policy.cpp: `tcp-cc:NAME` (the connection stays TCP, with
// congestion control NAME) needs one and stands alone in its rule;
// `udplite:cov=N` sets the bytes its checksum covers; `quic:cc=cubic|bbr`
// the congestion control of the QUIC connection its client opens; udp takes
// none.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/abi.h"
#include "core/result.h"

namespace hooker {

struct PortRule {
  uint16_t port = 0;
  std::vector<uint8_t> mechs;  // enum hk_mech, in the order given; never empty
  // Each mechanism's options as given after its colon, by enum hk_mech (a
  // rule names a mechanism once); absent: none.
  std::map<uint8_t, std::string> opts;

  std::string opt(uint8_t mech) const;  // "" if none
  // The congestion control of a tcp-cc rule, "" for a rule that moves.
  std::string cc() const { return opt(HK_MECH_TCP_CC); }
  hk_port_rule kernel() const;  // the `ports` map's value
  std::string str() const;      // "8080=udp,udplite", "8080=tcp-cc:hk_vegas"
  std::string mech_str(uint8_t mech) const;  // "tcp-cc:hk_vegas", "udp"
};

// The mechanism's name ("udp"), or "mech N" for one this build does not know.
std::string mech_name(uint8_t mech);
// Known names: every enum hk_mech, implemented or reserved.
std::optional<uint8_t> mech_by_name(const std::string& name);
// What hookerd can carry today; a rule naming another is refused.
bool mech_implemented(uint8_t mech);
// Whether NAME can be a TCP congestion control's name (TCP_CA_NAME_MAX);
// whether one is registered is the kernel's to say.
bool cc_name_valid(const std::string& name);

// udplite's checksum coverage: bytes from the UDP-Lite header on. At least
// its 8-byte header and Hooker's 32-byte frame header (token, offset: a bit
// error there would put bytes at a wrong place), at most a whole datagram
// (8 + wire::kMaxDatagram: more would cover it whole anyway).
constexpr uint16_t kLiteMinCoverage = 8 + 32;
constexpr uint16_t kLiteMaxCoverage = 8 + 1432;
// From udplite's options: "" is the least, "cov=N" N; nullopt if not one.
std::optional<uint16_t> udplite_coverage(const std::string& opts);

// From quic's options: the congestion control its rule names ("cc=cubic":
// "cubic"), "" for none (hookerd's --quic-cc); nullopt if not one.
std::optional<std::string> quic_cc(const std::string& opts);

// Parses one rule; the error names what is wrong and what to give instead
// (the caller says where the text came from).
Result<PortRule> parse_rule(const std::string& text);
// The part after '=': MECH[:OPTS][,MECH[:OPTS]...], for a rule on `port`
// (0: a file rule, which has no single port).
Result<PortRule> parse_mechs(const std::string& list, uint16_t port = 0);

// The policy as a list of rules, one per port, in the order they came.
class Policy {
 public:
  // Refuses a port that already has a rule.
  Status add(PortRule r);
  // Refuses a port without a rule.
  Result<PortRule> del(uint16_t port);
  const PortRule* find(uint16_t port) const;
  const std::vector<PortRule>& rules() const { return rules_; }
  std::vector<uint16_t> ports() const;

 private:
  std::vector<PortRule> rules_;
};

}  // namespace hooker
