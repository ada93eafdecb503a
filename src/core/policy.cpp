#include "core/policy.h"

#include <algorithm>
#include <charconv>

namespace hooker {

namespace {
// Indexed by enum hk_mech.
constexpr const char* kMechNames[] = {"none", "udp", "udplite", "quic"};
static_assert(sizeof(kMechNames) / sizeof(kMechNames[0]) == HK_MECH__MAX);

std::string implemented_list() {
  std::string s;
  for (uint8_t m = 1; m < HK_MECH__MAX; m++)
    if (mech_implemented(m)) s += (s.empty() ? "" : ", ") + std::string(kMechNames[m]);
  return s;
}
}  // namespace

std::string mech_name(uint8_t mech) {
  return mech < HK_MECH__MAX ? kMechNames[mech] : "mech " + std::to_string(mech);
}

std::optional<uint8_t> mech_by_name(const std::string& name) {
  for (uint8_t m = 1; m < HK_MECH__MAX; m++)
    if (name == kMechNames[m]) return m;
  return std::nullopt;
}

bool mech_implemented(uint8_t mech) {
  return mech == HK_MECH_UDP || mech == HK_MECH_UDPLITE;
}

hk_port_rule PortRule::kernel() const {
  hk_port_rule k{};
  for (uint8_t m : mechs) k.accept |= static_cast<__u8>(HK_MECH_BIT(m));
  k.prefer = mechs.front();
  return k;
}

std::string PortRule::str() const {
  std::string s = std::to_string(port);
  for (size_t i = 0; i < mechs.size(); i++) s += (i ? "," : "=") + mech_name(mechs[i]);
  return s;
}

Result<PortRule> parse_rule(const std::string& text) {
  auto eq = text.find('=');
  std::string port_s = text.substr(0, eq);
  int port = -1;
  auto [end, ec] = std::from_chars(port_s.data(), port_s.data() + port_s.size(), port);
  if (port_s.empty() || ec != std::errc() || end != port_s.data() + port_s.size())
    return Error{"not PORT[=MECH[,MECH...]] (for example 8080=udp)", 0};
  if (port < 1 || port > 65535)
    return Error{"port out of range: use 1..65535", 0};
  PortRule r{static_cast<uint16_t>(port), {}};
  if (eq == std::string::npos) {
    r.mechs.push_back(HK_MECH_UDP);  // PORT alone: what it always meant
    return r;
  }
  std::string list = text.substr(eq + 1);
  for (size_t at = 0;;) {
    size_t comma = list.find(',', at);
    std::string name = list.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    auto m = mech_by_name(name);
    if (!m)
      return Error{"unknown mechanism '" + name + "': use " + implemented_list(), 0};
    if (!mech_implemented(*m))
      return Error{"mechanism " + name + " is not implemented yet: use " + implemented_list(), 0};
    if (std::find(r.mechs.begin(), r.mechs.end(), *m) != r.mechs.end())
      return Error{"mechanism " + name + " is named twice", 0};
    r.mechs.push_back(*m);
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
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
