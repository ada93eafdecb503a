// The configuration file's rules while hookerd runs: at start and on
// `hookerctl policy reload`. Everything that can fail is done before the
// kernel's table is swapped, so a refused load leaves the old policy.
#include "daemon/daemon.h"
#include "daemon/policy_ctl.h"

namespace hooker {

using nlohmann::json;

Status Daemon::set_file_rules(const std::vector<MatchRule>& rules, const std::string& why) {
  uint32_t gen = rules_gen_ + 1;
  auto t = compile_file_rules(rules, opt_.config, opt_.cgroup, gen);
  if (!t) return t.error();
  std::vector<std::pair<uint16_t, uint16_t>> ranges;
  for (auto& r : rules) {
    if (r.never) continue;
    if (std::string bad = check_rule(r.action, deployed_.config()); !bad.empty())
      return Error{opt_.config + ":" + std::to_string(r.line) + ": " + bad, 0};
    if (!r.action.cc().empty() || !r.ports) continue;  // tcp-cc moves nothing: no FINs
    ranges.emplace_back(r.ports->lo, r.ports->hi);
  }
  // The mechanisms the rules name: deployed now with --eager, else checked
  // (their port free, their protocol in the kernel) and deployed when the
  // first connection needs one.
  for (const MechKind& k : mechanisms()) {
    bool named = false;
    for (auto& r : rules)
      for (uint8_t m : r.action.mechs) named |= !r.never && m == k.id;
    if (!named || deployed_.get(k.id)) continue;
    auto s = opt_.eager ? deployed_.deploy(k, why + " (--eager)") : deployed_.check(k);
    if (!s) return s;
  }
  // FINs first: no moved connection may close before its FIN is held.
  if (fins_)
    if (auto s = fins_->hold_ranges(ranges); !s) return s;
  if (auto s = kernel_->set_file_rules(*t); !s) return s;
  file_rules_ = rules;
  rules_gen_ = gen;
  // Listeners opened before a rule: single ports and small ranges follow.
  std::vector<uint16_t> ports;
  for (auto [lo, hi] : ranges)
    if (hi - lo < 64)
      for (uint32_t p = lo; p <= hi; p++) ports.push_back(static_cast<uint16_t>(p));
  if (!ports.empty() && listening_on_any(ports)) {
    auto f = kernel_->follow_listeners(ports);
    if (!f || !f->refused.empty())
      log::warn(f ? f->refused : "listeners opened before the rules: " + f.error().message());
  }
  return ok();
}

const MatchRule* Daemon::file_rule_of(uint32_t ref) const {
  uint32_t idx = ref & 0xffff;
  if (idx == 0 || (ref >> 16) != (rules_gen_ & 0xffff) || idx > file_rules_.size()) return nullptr;
  return &file_rules_[idx - 1];
}

json Daemon::file_rules_json() const {
  json out = json::array();
  for (auto& r : file_rules_) {
    json j = {{"line", r.line}, {"rule", r.str()}, {"never", r.never}};
    if (r.ports) j["ports"] = r.ports->str();
    json dst = json::array(), src = json::array();
    for (auto& p : r.dst) dst.push_back(p.str());
    for (auto& p : r.src) src.push_back(p.str());
    j["dst"] = dst;
    j["src"] = src;
    j["cgroup"] = r.cgroup;
    if (!r.never) {
      json accept = json::array();
      for (uint8_t m : r.action.mechs) accept.push_back(r.action.mech_str(m));
      j["accept"] = accept;
    }
    out.push_back(j);
  }
  return out;
}

json Daemon::reload_policy() {
  if (opt_.config.empty())
    return {{"error", "policy reload: hookerd was started without --config: there is no file "
                      "to read"}};
  auto c = load_config(opt_.config);
  if (!c) return {{"error", "policy reload: " + c.error().message() + " (the policy in force "
                            "stays)"}};
  if (auto s = set_file_rules(c->rules, "policy reload"); !s)
    return {{"error", "policy reload: " + s.error().message() + " (the policy in force stays)"}};
  log::info("policy reload: " + std::to_string(file_rules_.size()) + " rules from " + opt_.config);
  return {{"reloaded", opt_.config},
          {"generation", rules_gen_},
          {"rules", file_rules_json()},
          {"policy", policy_json(opt_.redirect)}};
}

}  // namespace hooker
