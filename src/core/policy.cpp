#include "core/policy.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>

#include "core/wire.h"

namespace hooker {

namespace {
// Indexed by enum hk_mech.
constexpr const char* kMechNames[] = {"none", "udp", "udplite", "quic", "tcp-cc"};
static_assert(sizeof(kMechNames) / sizeof(kMechNames[0]) == HK_MECH__MAX);

// What a mechanism takes after its colon. A mechanism that gets options
// (udplite:cov=N) gives its syntax here and checks them in check_opts.
struct OptSpec {
  const char* syntax;  // "" : takes none
  bool required;
  bool alone;  // no other mechanism in its rule (it moves nothing)
};
OptSpec opt_spec(uint8_t mech) {
  if (mech == HK_MECH_TCP_CC) return {"NAME", true, true};
  if (mech == HK_MECH_UDPLITE) return {"cov=N", false, false};
  if (mech == HK_MECH_QUIC) return {"cc=cubic|bbr", false, false};
  return {"", false, false};
}

// The options' meaning, once the syntax says some are there.
std::optional<std::string> check_opts(uint8_t mech, const std::string& opts) {
  if (mech == HK_MECH_TCP_CC && !cc_name_valid(opts))
    return "tcp-cc:" + opts + ": a congestion control's name is 1 to " +
           std::to_string(HK_CC_NAME_MAX - 1) + " letters, digits, '_' or '-' (tcp-cc:hk_vegas)";
  if (mech == HK_MECH_UDPLITE && (opts.empty() || !udplite_coverage(opts)))
    return "udplite:" + opts + ": the checksum coverage is cov=N, N bytes from the UDP-Lite " +
           "header on, " + std::to_string(kLiteMinCoverage) + " (its header and Hooker's) to " +
           std::to_string(kLiteMaxCoverage) + " (a whole datagram) (udplite:cov=200)";
  if (mech == HK_MECH_QUIC && (opts.empty() || !quic_cc(opts)))
    return "quic:" + opts + ": the congestion control is cc=cubic or cc=bbr (quic:cc=cubic)";
  return std::nullopt;
}

std::string implemented_list() {
  std::string s;
  for (uint8_t m = 1; m < HK_MECH__MAX; m++) {
    if (!mech_implemented(m)) continue;
    OptSpec o = opt_spec(m);
    s += (s.empty() ? "" : ", ") + std::string(kMechNames[m]) +
         (o.required ? std::string(":") + o.syntax : "");
  }
  return s;
}
}  // namespace

bool cc_name_valid(const std::string& name) {
  if (name.empty() || name.size() >= HK_CC_NAME_MAX) return false;
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  return true;
}

static_assert(kLiteMinCoverage == 8 + wire::kHeader && kLiteMaxCoverage == 8 + wire::kMaxDatagram);

std::optional<uint16_t> udplite_coverage(const std::string& opts) {
  if (opts.empty()) return kLiteMinCoverage;
  constexpr std::string_view key = "cov=";
  if (!opts.starts_with(key)) return std::nullopt;
  const char* first = opts.data() + key.size();
  const char* last = opts.data() + opts.size();
  unsigned n = 0;
  auto [end, ec] = std::from_chars(first, last, n);
  if (first == last || ec != std::errc() || end != last || n < kLiteMinCoverage ||
      n > kLiteMaxCoverage)
    return std::nullopt;
  return static_cast<uint16_t>(n);
}

std::optional<std::string> quic_cc(const std::string& opts) {
  if (opts.empty() || opts == "cc=cubic" || opts == "cc=bbr")
    return opts.empty() ? opts : opts.substr(3);
  return std::nullopt;
}

std::string PortRule::opt(uint8_t mech) const {
  auto it = opts.find(mech);
  return it == opts.end() ? "" : it->second;
}

std::string PortRule::mech_str(uint8_t mech) const {
  auto it = opts.find(mech);
  return mech_name(mech) + (it == opts.end() ? "" : ":" + it->second);
}

std::string mech_name(uint8_t mech) {
  return mech < HK_MECH__MAX ? kMechNames[mech] : "mech " + std::to_string(mech);
}

std::optional<uint8_t> mech_by_name(const std::string& name) {
  for (uint8_t m = 1; m < HK_MECH__MAX; m++)
    if (name == kMechNames[m]) return m;
  return std::nullopt;
}

bool mech_implemented(uint8_t mech) {
  return mech == HK_MECH_UDP || mech == HK_MECH_UDPLITE || mech == HK_MECH_QUIC ||
         mech == HK_MECH_TCP_CC;
}

hk_port_rule PortRule::kernel() const {
  hk_port_rule k{};
  if (std::string name = cc(); !name.empty()) {
    // Moves nothing: no handshake asks for or accepts a mechanism here.
    std::memcpy(k.cc, name.data(), std::min(name.size(), sizeof(k.cc) - 1));
    return k;
  }
  for (uint8_t m : mechs) k.accept |= static_cast<__u8>(HK_MECH_BIT(m));
  k.prefer = mechs.front();
  return k;
}

std::string PortRule::str() const {
  std::string s = std::to_string(port);
  for (size_t i = 0; i < mechs.size(); i++) s += (i ? "," : "=") + mech_str(mechs[i]);
  return s;
}

Result<PortRule> parse_rule(const std::string& text) {
  auto eq = text.find('=');
  std::string port_s = text.substr(0, eq);
  int port = -1;
  auto [end, ec] = std::from_chars(port_s.data(), port_s.data() + port_s.size(), port);
  if (port_s.empty() || ec != std::errc() || end != port_s.data() + port_s.size())
    return Error{"not PORT[=MECH[,MECH...]], MECH[:OPTS] (for example 8080=udp or "
                 "8080=tcp-cc:hk_vegas)", 0};
  if (port < 1 || port > 65535)
    return Error{"port out of range: use 1..65535", 0};
  if (eq == std::string::npos) {
    PortRule r{static_cast<uint16_t>(port), {HK_MECH_UDP}, {}};  // PORT alone: what it always meant
    return r;
  }
  auto r = parse_mechs(text.substr(eq + 1), static_cast<uint16_t>(port));
  if (!r) return r.error();
  r->port = static_cast<uint16_t>(port);
  return r;
}

Result<PortRule> parse_mechs(const std::string& list, uint16_t port) {
  PortRule r{port, {}, {}};
  for (size_t at = 0;;) {
    size_t comma = list.find(',', at);
    std::string item = list.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    size_t colon = item.find(':');
    std::string name = item.substr(0, colon);
    auto m = mech_by_name(name);
    if (!m)
      return Error{"unknown mechanism '" + name + "': use " + implemented_list(), 0};
    if (!mech_implemented(*m))
      return Error{"mechanism " + name + " is not implemented yet: use " + implemented_list(), 0};
    if (std::find(r.mechs.begin(), r.mechs.end(), *m) != r.mechs.end())
      return Error{"mechanism " + name + " is named twice", 0};
    OptSpec spec = opt_spec(*m);
    if (colon == std::string::npos && spec.required)
      return Error{"mechanism " + name + " needs its options: " + name + ":" + spec.syntax, 0};
    if (colon != std::string::npos) {
      std::string opts = item.substr(colon + 1);
      if (!*spec.syntax)
        return Error{"mechanism " + name + " takes no options (" + item + ")", 0};
      if (auto why = check_opts(*m, opts)) return Error{*why, 0};
      r.opts[*m] = opts;
    }
    r.mechs.push_back(*m);
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  // A mechanism that moves nothing cannot share a rule with one that moves:
  // the connection either stays TCP or it does not.
  for (uint8_t m : r.mechs)
    if (opt_spec(m).alone && r.mechs.size() > 1)
      return Error{"mechanism " + mech_name(m) + " stands alone in a rule: the connection stays "
                   "TCP, so it cannot be moved onto " +
                       mech_name(r.mechs[r.mechs.front() == m ? 1 : 0]) +
                       " too (one rule per port: " +
                       (r.port ? std::to_string(r.port) + "=" : std::string()) + r.mech_str(m) +
                       ")",
                   0};
  return r;
}

Status Policy::add(PortRule r) {
  if (const PortRule* old = find(r.port))
    return Error{"port " + std::to_string(r.port) + " already has a rule (" + old->str() + ")",
                 0};
  if (rules_.size() >= HK_MAX_PORTS)
    return Error{"the policy is full: at most " + std::to_string(HK_MAX_PORTS) + " ports", 0};
  rules_.push_back(std::move(r));
  return ok();
}

Result<PortRule> Policy::del(uint16_t port) {
  auto it = std::find_if(rules_.begin(), rules_.end(),
                         [port](const PortRule& r) { return r.port == port; });
  if (it == rules_.end())
    return Error{"port " + std::to_string(port) + " has no rule (policy list shows them)", 0};
  PortRule r = std::move(*it);
  rules_.erase(it);
  return r;
}

const PortRule* Policy::find(uint16_t port) const {
  for (auto& r : rules_)
    if (r.port == port) return &r;
  return nullptr;
}

std::vector<uint16_t> Policy::ports() const {
  std::vector<uint16_t> p;
  for (auto& r : rules_) p.push_back(r.port);
  return p;
}

}  // namespace hooker
