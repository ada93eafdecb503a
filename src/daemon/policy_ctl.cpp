#include "daemon/policy_ctl.h"

#include "daemon/options.h"
#include "mech/tcp_cc/tcp_cc.h"

#include <algorithm>
#include <charconv>
#include <sstream>
#include <vector>

namespace hooker {

namespace {

using nlohmann::json;

json refused(const std::string& why) { return {{"error", why}}; }

std::vector<std::string> words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> w;
  for (std::string x; in >> x;) w.push_back(x);
  return w;
}

// Order: the FIN hold first, so no moved connection on the port can close
// before its FINs are held; the kernel's map last, since from that moment
// new connections move.
json add(const std::string& text, const PolicyTargets& t) {
  auto r = parse_rule(text);
  if (!r) return refused("policy add " + text + ": " + r.error().what);
  if (const PortRule* old = t.policy.find(r->port))
    return refused("policy add " + text + ": port " + std::to_string(r->port) +
                   " already has a rule (" + old->str() + "): policy del " +
                   std::to_string(r->port) + " first");
  if (std::string why = t.check ? t.check(*r) : ""; !why.empty())
    return refused("policy add " + text + ": " + why);
  if (auto s = t.fins.add_ports({r->port}); !s) return refused("policy add " + text + ": " + s.error().message());
  if (auto s = t.kernel.set_rule(*r); !s) {
    (void)t.fins.remove_port(r->port);
    return refused("policy add " + text + ": " + s.error().message());
  }
  std::string added = r->str();
  uint16_t port = r->port;
  std::string warn = t.added ? t.added(*r) : "";
  (void)t.policy.add(r.take());  // checked above: the port had no rule
  json out = {{"added", added}, {"policy", policy_json(t.policy)}};
  if (!warn.empty()) out["warning"] = warn;
  // Listeners opened before the rule: the rule stands either way, the
  // answer says which of them stay plain.
  auto f = t.kernel.follow_listeners({port});
  out["listeners_followed"] = f ? f->followed : 0;
  if (!f || !f->refused.empty())
    out["warning"] = f ? f->refused : "listeners opened before this rule will not negotiate: " +
                                          f.error().message();
  return out;
}

// The kernel's map first: no new connection moves on the port from then
// on. Its FIN rule stays while moved connections on it live.
json del(const std::string& text, const PolicyTargets& t) {
  int port = -1;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
  if (ec != std::errc() || end != text.data() + text.size())
    return refused("policy del " + text + ": not a port number");
  if (port < 1 || port > 65535)
    return refused("policy del " + text + ": port out of range: use 1..65535");
  auto p = static_cast<uint16_t>(port);
  if (!t.policy.find(p))
    return refused("policy del " + text + ": port " + text +
                   " has no rule (policy list shows them)");
  if (auto s = t.kernel.del_rule(p); !s) return refused("policy del " + text + ": " + s.error().message());
  auto gone = t.policy.del(p);
  t.fins.keep_until_idle(p);
  sweep_fin_rules(t);
  return {{"removed", gone->str()}, {"policy", policy_json(t.policy)}};
}

}  // namespace

json policy_json(const Policy& p) {
  json rules = json::array();
  for (auto& r : p.rules()) {
    json accept = json::array();
    // With each mechanism's options (tcp-cc:hk_vegas).
    for (uint8_t m : r.mechs) accept.push_back(r.mech_str(m));
    rules.push_back({{"port", r.port}, {"accept", accept}, {"ask", r.mech_str(r.mechs.front())},
                     {"rule", r.str()}});
  }
  return rules;
}

std::string check_rule(const PortRule& r, const MechConfig& cfg) {
  if (std::string cc = r.cc(); !cc.empty())
    if (auto s = tcp_cc_known(cc); !s) return s.error().message();
  bool quic = std::find(r.mechs.begin(), r.mechs.end(), HK_MECH_QUIC) != r.mechs.end();
  if (quic && (cfg.quic_cert.empty() || cfg.quic_key.empty() || cfg.quic_ca.empty()))
    return kQuicNeedsFiles;
  return "";
}

void sweep_fin_rules(const PolicyTargets& t) { t.fins.sweep(t.port_in_use); }

std::string policy_request(const std::string& args, const PolicyTargets& t) {
  sweep_fin_rules(t);
  auto w = words(args);
  json out;
  if (w.size() == 1 && w[0] == "list")
    out = {{"policy", policy_json(t.policy)}, {"fin_hold_idling", t.fins.idling()},
           {"mechanisms", t.mechanisms ? t.mechanisms() : json::array()}};
  else if (w.size() == 2 && w[0] == "add")
    out = add(w[1], t);
  else if (w.size() == 2 && w[0] == "del")
    out = del(w[1], t);
  else
    out = refused("malformed policy request 'policy" + args +
                  "': use policy list, policy add PORT[=MECH[:OPTS][,MECH...]] or policy del PORT");
  return out.dump(2) + "\n";
}

}  // namespace hooker
