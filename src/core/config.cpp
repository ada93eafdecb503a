#include "core/config.h"

#include <fstream>
#include <sstream>
#include <toml++/toml.h>

#include "core/endpoint.h"
#include "core/log.h"

namespace hooker {

const char* const kConfigKeys =
    "cgroup, ifaces, xdp_mode, port, redirect, control, control_group, metrics, pin_dir, "
    "max_conns, udplite_impl, quic_cert, quic_key, quic_ca, quic_cc, keepalive, udp_retry, eager, "
    "verbose, log_level, [[rule]]";

namespace {

constexpr const char* kRuleKeys = "port, dst, src, cgroup, mech";

int line_of(const toml::node& n) { return static_cast<int>(n.source().begin.line); }

// One error, "FILE:LINE: problem".
Error at(const std::string& path, const toml::node& n, const std::string& what) {
  return Error{path + ":" + std::to_string(line_of(n)) + ": " + what, 0};
}

const char* type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    default: return "another type";
  }
}

Error wrong_type(const std::string& path, const std::string& key, const toml::node& n,
                 const char* want) {
  return at(path, n, key + " is " + type_name(n) + ": it takes " + want);
}

Result<std::string> string_of(const std::string& path, const std::string& key,
                              const toml::node& n) {
  if (auto v = n.value<std::string>(); v && n.is_string()) return *v;
  return wrong_type(path, key, n, "a string");
}

// A string or an array of strings (dst = "10.0.0.0/8" or ["10.0.0.0/8", ...]).
Result<std::vector<std::string>> strings_of(const std::string& path, const std::string& key,
                                            const toml::node& n) {
  std::vector<std::string> out;
  if (n.is_string()) {
    out.push_back(*n.value<std::string>());
    return out;
  }
  const toml::array* a = n.as_array();
  if (!a) return wrong_type(path, key, n, "a string or an array of strings");
  for (const toml::node& e : *a) {
    if (!e.is_string()) return wrong_type(path, key + " element", e, "a string");
    out.push_back(*e.value<std::string>());
  }
  return out;
}

Result<int64_t> integer_of(const std::string& path, const std::string& key, const toml::node& n) {
  if (n.is_integer()) return *n.value<int64_t>();
  return wrong_type(path, key, n, "an integer");
}

Result<bool> bool_of(const std::string& path, const std::string& key, const toml::node& n) {
  if (n.is_boolean()) return *n.value<bool>();
  return wrong_type(path, key, n, "true or false");
}

// A cgroup sub-path: relative, no "." or ".." (it stays under --cgroup).
bool sub_path_ok(const std::string& s) {
  if (s.empty() || s.front() == '/') return false;
  std::istringstream in(s);
  for (std::string part; std::getline(in, part, '/');)
    if (part.empty() || part == "." || part == "..") return false;
  return true;
}

Result<MatchRule> parse_match_rule(const std::string& path, const toml::table& t) {
  MatchRule r;
  r.line = line_of(t);
  bool have_mech = false;
  for (auto&& [k, v] : t) {
    std::string key(k.str());
    if (key == "port") {
      std::string text;
      if (v.is_integer()) {
        text = std::to_string(*v.value<int64_t>());
      } else if (v.is_string()) {
        text = *v.value<std::string>();
      } else {
        return wrong_type(path, "port", v, "a port (8080) or a range (\"9000-9100\")");
      }
      auto p = parse_port_range(text);
      if (!p) return at(path, v, p.error().what);
      r.ports = *p;
    } else if (key == "dst" || key == "src") {
      auto list = strings_of(path, key, v);
      if (!list) return list.error();
      if (list->empty()) return at(path, v, key + " is empty: leave it out to match any address");
      for (auto& text : *list) {
        auto p = parse_prefix(text);
        if (!p) return at(path, v, key + ": " + p.error().what);
        (key == "dst" ? r.dst : r.src).push_back(*p);
      }
    } else if (key == "cgroup") {
      auto s = string_of(path, key, v);
      if (!s) return s.error();
      if (!sub_path_ok(*s))
        return at(path, v, "cgroup '" + *s + "': a sub-path of --cgroup, relative, without "
                           "'.' or '..' (web/frontend)");
      r.cgroup = *s;
    } else if (key == "mech") {
      auto s = string_of(path, key, v);
      if (!s) return s.error();
      have_mech = true;
      if (*s == "never") {
        r.never = true;
      } else {
        auto m = parse_mechs(*s);
        if (!m) return at(path, v, "mech: " + m.error().what + ", or never");
        r.action = m.take();
      }
    } else {
      return at(path, v, "unknown key '" + key + "' in [[rule]]: use " + kRuleKeys);
    }
  }
  if (!have_mech)
    return Error{path + ":" + std::to_string(r.line) +
                     ": [[rule]] without mech: say what it does (mech = \"udp\", "
                     "\"udplite:cov=200,udp\", \"tcp-cc:hk_vegas\" or \"never\")",
                 0};
  if (!r.never && !r.ports)
    return Error{path + ":" + std::to_string(r.line) +
                     ": a rule that moves names its server port (port = 8080 or "
                     "\"9000-9100\"); only a never rule may match any port",
                 0};
  return r;
}

}  // namespace

std::string ConfigFile::where(const std::string& key) const {
  auto it = line.find(key);
  return it == line.end() ? path + ": " : path + ":" + std::to_string(it->second) + ": ";
}

Result<ConfigFile> parse_config(const std::string& text, const std::string& path) {
  toml::table doc;
  try {
    doc = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    return Error{path + ":" + std::to_string(e.source().begin.line) +
                     ": syntax error: " + std::string(e.description()),
                 0};
  }
  ConfigFile c;
  c.path = path;
  for (auto&& [k, v] : doc) {
    std::string key(k.str());
    c.line[key] = line_of(v);
    auto str = [&](std::optional<std::string>& into) -> Status {
      auto s = string_of(path, key, v);
      if (!s) return s.error();
      into = *s;
      return ok();
    };
    Status st = ok();
    if (key == "cgroup") {
      st = str(c.cgroup);
    } else if (key == "xdp_mode") {
      st = str(c.xdp_mode);
      if (st && *c.xdp_mode != "auto" && *c.xdp_mode != "native" && *c.xdp_mode != "generic" &&
          *c.xdp_mode != "tc")
        return at(path, v, "xdp_mode " + *c.xdp_mode + ": use auto, native, generic or tc");
    } else if (key == "udplite_impl") {
      st = str(c.udplite_impl);
      if (st && *c.udplite_impl != "auto" && *c.udplite_impl != "kernel" &&
          *c.udplite_impl != "ebpf")
        return at(path, v, "udplite_impl " + *c.udplite_impl + ": use kernel, ebpf or auto");
    } else if (key == "quic_cert" || key == "quic_key" || key == "quic_ca") {
      st = str(key == "quic_cert" ? c.quic_cert : key == "quic_key" ? c.quic_key : c.quic_ca);
    } else if (key == "quic_cc") {
      st = str(c.quic_cc);
      if (st && *c.quic_cc != "cubic" && *c.quic_cc != "bbr")
        return at(path, v, "quic_cc " + *c.quic_cc + ": use cubic or bbr");
    } else if (key == "log_level") {
      st = str(c.log_level);
      if (st)
        if (auto l = log::parse_level(*c.log_level); !l) return at(path, v, l.error().what);
    } else if (key == "control") {
      st = str(c.control);
    } else if (key == "control_group") {
      st = str(c.control_group);
    } else if (key == "pin_dir") {
      st = str(c.pin_dir);
    } else if (key == "metrics") {
      st = str(c.metrics);
      if (st)
        if (auto e = parse_endpoint(*c.metrics); !e)
          return at(path, v, "metrics " + *c.metrics + ": " + e.error().what);
    } else if (key == "ifaces") {
      auto l = strings_of(path, key, v);
      if (!l) return l.error();
      c.ifaces = *l;
    } else if (key == "redirect") {
      auto l = strings_of(path, key, v);
      if (!l) return l.error();
      for (auto& r : *l)
        if (auto p = parse_rule(r); !p) return at(path, v, "redirect " + r + ": " + p.error().what);
      c.redirect = *l;
    } else if (key == "port") {
      auto n = integer_of(path, key, v);
      if (!n) return n.error();
      if (*n < 1 || *n > 65535)
        return at(path, v, "port " + std::to_string(*n) + " is out of range: use 1..65535");
      c.port = static_cast<uint16_t>(*n);
    } else if (key == "max_conns") {
      auto n = integer_of(path, key, v);
      if (!n) return n.error();
      if (*n < 16 || *n > 65536) return at(path, v, "max_conns must be 16..65536");
      c.max_conns = static_cast<uint32_t>(*n);
    } else if (key == "keepalive" || key == "udp_retry") {
      auto n = integer_of(path, key, v);
      if (!n) return n.error();
      if (auto e = check_seconds(key, *n); !e.empty()) return at(path, v, e);
      (key == "keepalive" ? c.keepalive_s : c.udp_retry_s) = static_cast<uint32_t>(*n);
    } else if (key == "eager" || key == "verbose") {
      auto b = bool_of(path, key, v);
      if (!b) return b.error();
      (key == "eager" ? c.eager : c.verbose) = *b;
    } else if (key == "rule") {
      const toml::array* a = v.as_array();
      if (!a || !a->is_array_of_tables())
        return at(path, v, "rule is a list of tables: write each as [[rule]]");
      for (const toml::node& t : *a) {
        auto r = parse_match_rule(path, *t.as_table());
        if (!r) return r.error();
        c.rules.push_back(r.take());
      }
    } else {
      return at(path, v, "unknown key '" + key + "': use " + kConfigKeys);
    }
    if (!st) return st.error();
  }
  return c;
}

std::string check_seconds(const std::string& key, int64_t n) {
  if (n >= 1 && n <= kMaxSeconds) return "";
  return key + " " + std::to_string(n) + " is out of range: use 1.." + std::to_string(kMaxSeconds) +
         " (seconds)";
}

Result<ConfigFile> load_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Error{path + ": cannot read the configuration file", errno};
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path);
}

}  // namespace hooker
