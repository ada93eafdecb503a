// `policy add|del|list` on the control socket: the live policy, changed in
// the kernel's map, the FIN hold's rules and hookerd's own list together,
// or not at all. New connections follow; established ones are untouched.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "bpf/kernel.h"
#include "core/policy.h"
#include "daemon/fin_hold.h"
#include "mech/mechanism.h"

namespace hooker {

struct PolicyTargets {
  Policy& policy;
  Kernel& kernel;
  FinHold& fins;
  // Whether a moved connection on this port (either end) is still alive:
  // its FINs stay held after its rule goes.
  std::function<bool(uint16_t port)> port_in_use;
  // Runs before anything changes: what it returns, if anything, refuses the
  // rule (a tcp-cc rule naming an algorithm the kernel does not know).
  std::function<std::string(const PortRule&)> check;
  // Runs once a rule is in place; what it returns, if anything, is a warning.
  std::function<std::string(const PortRule&)> added;
  // What is deployed, when and at what cost (policy list shows it too).
  std::function<nlohmann::json()> mechanisms;
};

// `args` is what follows "policy" in the request. Returns the JSON answer,
// {"error": "..."} with nothing changed when the request is refused.
std::string policy_request(const std::string& args, const PolicyTargets& t);

// What parse_rule cannot know: whether a tcp-cc rule's algorithm exists
// (built in here, or registered in the kernel now). "" if the rule may go
// in, else why not (PolicyTargets::check; --redirect at start).
// quic: hookerd was given no certificate.
std::string check_rule(const PortRule& r, const MechConfig& cfg);

// The rules as JSON (policy list, hookerctl status).
nlohmann::json policy_json(const Policy& p);

// Drops the FIN-hold rules of removed ports whose last moved connection
// ended. Every policy request runs it; the daemon's timer may too.
void sweep_fin_rules(const PolicyTargets& t);

}  // namespace hooker
