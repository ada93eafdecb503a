#include "core/rules.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace hooker {

namespace {

std::optional<int> number(const std::string& s) {
  int v = -1;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

std::array<uint32_t, 4> Prefix::mask() const {
  std::array<uint32_t, 4> m{};
  for (int i = 0; i < 4; i++) {
    int bits = std::clamp(int{len} - 32 * i, 0, 32);
    m[i] = bits == 0 ? 0 : htonl(bits == 32 ? ~0u : ~0u << (32 - bits));
  }
  return m;
}

std::string Prefix::str() const {
  char buf[INET6_ADDRSTRLEN] = "";
  inet_ntop(family, addr.data(), buf, sizeof(buf));
  return std::string(buf) + "/" + std::to_string(len);
}

Result<Prefix> parse_prefix(const std::string& text) {
  auto slash = text.find('/');
  std::string host = text.substr(0, slash);
  Prefix p;
  if (inet_pton(AF_INET, host.c_str(), p.addr.data()) == 1) {
    p.family = AF_INET;
  } else if (inet_pton(AF_INET6, host.c_str(), p.addr.data()) == 1) {
    p.family = AF_INET6;
  } else {
    return Error{"bad prefix '" + text + "': not ADDRESS[/LENGTH] (10.0.0.0/8, fd00::/64)", 0};
  }
  int max = p.family == AF_INET ? 32 : 128;
  int len = max;
  if (slash != std::string::npos) {
    auto n = number(text.substr(slash + 1));
    if (!n || *n < 0 || *n > max)
      return Error{"bad prefix '" + text + "': the length is 0.." + std::to_string(max), 0};
    len = *n;
  }
  p.len = static_cast<uint8_t>(len);
  auto m = p.mask();
  Prefix net = p;
  for (int i = 0; i < 4; i++) net.addr[i] &= m[i];
  if (net.addr != p.addr)
    return Error{"bad prefix '" + text + "': bits set past its length (did you mean " +
                     net.str() + "?)", 0};
  return p;
}

std::string PortRange::str() const {
  return lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi);
}

Result<PortRange> parse_port_range(const std::string& text) {
  auto dash = text.find('-');
  auto lo = number(text.substr(0, dash));
  auto hi = dash == std::string::npos ? lo : number(text.substr(dash + 1));
  if (!lo || !hi)
    return Error{"bad port '" + text + "': PORT or FIRST-LAST (8080, 9000-9100)", 0};
  if (*lo < 1 || *lo > 65535 || *hi < 1 || *hi > 65535)
    return Error{"port out of range: '" + text + "': use 1..65535", 0};
  if (*lo > *hi) return Error{"bad port range '" + text + "': the first is above the last", 0};
  return PortRange{static_cast<uint16_t>(*lo), static_cast<uint16_t>(*hi)};
}

std::string MatchRule::str() const {
  std::string s;
  auto list = [&s](const char* key, const std::vector<Prefix>& ps) {
    if (ps.empty()) return;
    s += std::string(s.empty() ? "" : " ") + key + " ";
    for (size_t i = 0; i < ps.size(); i++) s += (i ? "," : "") + ps[i].str();
  };
  if (ports) s += "port " + ports->str();
  list("dst", dst);
  list("src", src);
  if (!cgroup.empty()) s += std::string(s.empty() ? "" : " ") + "cgroup " + cgroup;
  if (s.empty()) s = "any";
  s += " => ";
  if (never) return s + "never";
  for (size_t i = 0; i < action.mechs.size(); i++)
    s += (i ? "," : "") + action.mech_str(action.mechs[i]);
  return s;
}

Result<hk_rules> compile_rules(const std::vector<MatchRule>& rules, const CgroupResolver& cg,
                               uint32_t gen) {
  hk_rules t{};
  t.gen = gen;
  for (size_t i = 0; i < rules.size(); i++) {
    const MatchRule& r = rules[i];
    std::string where = "line " + std::to_string(r.line) + ": ";
    if (!r.never && !r.ports)
      return Error{where + "a rule that moves names its server port (port = 8080 or "
                           "\"9000-9100\"): hookerd holds FINs and follows listeners by port",
                   0};
    hk_rule base{};
    base.port_lo = r.ports ? r.ports->lo : 1;
    base.port_hi = r.ports ? r.ports->hi : 65535;
    base.ref = static_cast<__u16>(i + 1);
    if (!r.never) base.action = r.action.kernel();
    if (!r.cgroup.empty()) {
      auto c = cg(r.cgroup);
      if (!c) return Error{where + c.error().what, c.error().err};
      if (c->level > HK_CG_MAX_LEVEL)
        return Error{where + "cgroup " + r.cgroup + " is " + std::to_string(c->level) +
                         " levels deep: at most " + std::to_string(HK_CG_MAX_LEVEL),
                     0};
      base.cgroup = c->id;
      base.cgroup_level = c->level;
      t.flags |= HK_RULES_CGROUP;
    }
    // Every pair of one family; none at all if the lists share no family.
    std::vector<const Prefix*> dsts, srcs;
    for (auto& p : r.dst) dsts.push_back(&p);
    for (auto& p : r.src) srcs.push_back(&p);
    if (dsts.empty()) dsts.push_back(nullptr);
    if (srcs.empty()) srcs.push_back(nullptr);
    size_t added = 0;
    for (const Prefix* d : dsts)
      for (const Prefix* s : srcs) {
        if (d && s && d->family != s->family) continue;
        if (t.n >= HK_MAX_RULES)
          return Error{where + "too many rules: at most " + std::to_string(HK_MAX_RULES) +
                           " (each destination and source pair of a rule counts once)",
                       0};
        hk_rule k = base;
        if (d) {
          k.family = d->family;
          auto m = d->mask();
          std::memcpy(k.dst, d->addr.data(), sizeof(k.dst));
          std::memcpy(k.dst_mask, m.data(), sizeof(k.dst_mask));
        }
        if (s) {
          k.family = s->family;
          auto m = s->mask();
          std::memcpy(k.src, s->addr.data(), sizeof(k.src));
          std::memcpy(k.src_mask, m.data(), sizeof(k.src_mask));
        }
        t.rule[t.n++] = k;
        added++;
      }
    if (!added)
      return Error{where + "no destination and source of the same family: the rule can "
                           "never match (IPv4 with IPv4, IPv6 with IPv6)",
                   0};
  }
  return t;
}

std::optional<size_t> first_match(const hk_rules& t, uint8_t family,
                                  const std::array<uint32_t, 4>& src,
                                  const std::array<uint32_t, 4>& dst, uint16_t port,
                                  const std::vector<uint64_t>& ancestors) {
  for (size_t i = 0; i < t.n && i < HK_MAX_RULES; i++) {
    const hk_rule& r = t.rule[i];
    if (!hk_rule_matches(&r, family, src.data(), dst.data(), port)) continue;
    if (r.cgroup && (r.cgroup_level >= ancestors.size() || ancestors[r.cgroup_level] != r.cgroup))
      continue;
    return i;
  }
  return std::nullopt;
}

}  // namespace hooker
