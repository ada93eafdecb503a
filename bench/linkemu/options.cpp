#include "options.h"

#include <cmath>
#include <cstdlib>
#include <stdexcept>

namespace linkemu {
namespace {

// A bad value: the message becomes "--flag VALUE: <what>".
struct BadValue : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Splits "25ms" into 25 and "ms"; the number must be finite and non-negative.
std::pair<double, std::string> number_and_unit(const std::string& s) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || !std::isfinite(v)) throw BadValue("not a number");
  if (v < 0) throw BadValue("must not be negative");
  return {v, std::string(end)};
}

uint64_t parse_time_ns(const std::string& s) {
  auto [v, unit] = number_and_unit(s);
  double scale;
  if (unit == "s") scale = 1e9;
  else if (unit == "ms") scale = 1e6;
  else if (unit == "us") scale = 1e3;
  else if (unit == "ns") scale = 1;
  else if (unit.empty() && v == 0) scale = 0;
  else throw BadValue("a time needs a unit: s, ms, us or ns (e.g. 25ms)");
  if (v * scale > 60e9) throw BadValue("more than 60 s");
  return static_cast<uint64_t>(std::llround(v * scale));
}

// "1%" or "1" both mean one percent; returned as a probability.
double parse_percent(const std::string& s) {
  auto [v, unit] = number_and_unit(s);
  if (!unit.empty() && unit != "%") throw BadValue("a rate in percent, e.g. 1% or 0.1%");
  if (v > 100) throw BadValue("must be between 0% and 100%");
  return v / 100.0;
}

uint64_t parse_rate(const std::string& s) {
  auto [v, unit] = number_and_unit(s);
  double scale;
  if (unit == "bit") scale = 1;
  else if (unit == "kbit") scale = 1e3;
  else if (unit == "mbit") scale = 1e6;
  else if (unit == "gbit") scale = 1e9;
  else throw BadValue("a rate needs a unit: bit, kbit, mbit or gbit (e.g. 100mbit)");
  if (v * scale < 8000 && v != 0) throw BadValue("below 8 kbit/s: a frame would take seconds");
  if (v * scale > 1e12) throw BadValue("above 1000 gbit/s");
  return static_cast<uint64_t>(v * scale);
}

uint32_t parse_limit(const std::string& s) {
  auto [v, unit] = number_and_unit(s);
  if (!unit.empty() || v != std::floor(v) || v < 1 || v > 1e6)
    throw BadValue("a frame count between 1 and 1000000");
  return static_cast<uint32_t>(v);
}

// Sets one impairment field named `name` ("delay", "loss", ...) from `value`.
bool set_field(Impairment& imp, const std::string& name, const std::string& value) {
  if (name == "delay") imp.delay_ns = parse_time_ns(value);
  else if (name == "jitter") imp.jitter_ns = parse_time_ns(value);
  else if (name == "loss") imp.loss = parse_percent(value);
  else if (name == "dup") imp.dup = parse_percent(value);
  else if (name == "reorder") imp.reorder = parse_percent(value);
  else if (name == "corrupt") imp.corrupt = parse_percent(value);
  else if (name == "rate") imp.rate_bps = parse_rate(value);
  else if (name == "limit") imp.limit = parse_limit(value);
  else return false;
  return true;
}

}  // namespace

std::string usage() {
  return "usage: hooker-linkemu --a IFACE --b IFACE [IMPAIRMENT VALUE]... [--seed N]\n"
         "Relays Ethernet frames between two interfaces, impairing both directions.\n"
         "Impairments (prefix with a2b- or b2a- for one direction only, e.g. --b2a-loss 5%):\n"
         "  --delay T     one-way delay (25ms, 500us)     --jitter T    uniform +-T, order kept\n"
         "  --loss P      drop P% of frames (1%, 0.1%)    --dup P       duplicate P%\n"
         "  --reorder P   send P% at once, overtaking     --corrupt P   flip a bit in P%\n"
         "  --rate R      serialise at R (100mbit, 1gbit) --limit N     shaper queue (1000)\n"
         "Prints 'hooker-linkemu: ready' once relaying; SIGTERM/SIGINT print counters as JSON.\n";
}

std::optional<Options> parse_options(const std::vector<std::string>& args, std::string& error) {
  Options o;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i], value;
    if (flag.rfind("--", 0) != 0) {
      error = "unexpected argument '" + flag + "' (see --help)";
      return std::nullopt;
    }
    if (auto eq = flag.find('='); eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      error = flag + ": missing value";
      return std::nullopt;
    }
    std::string name = flag.substr(2);
    try {
      if (name == "a") o.port_a = value;
      else if (name == "b") o.port_b = value;
      else if (name == "seed") {
        auto [v, unit] = number_and_unit(value);
        if (!unit.empty() || v != std::floor(v)) throw BadValue("an integer");
        o.seed = static_cast<uint64_t>(v);
      } else if (name.rfind("a2b-", 0) == 0) {
        if (!set_field(o.a2b, name.substr(4), value)) throw std::invalid_argument("");
      } else if (name.rfind("b2a-", 0) == 0) {
        if (!set_field(o.b2a, name.substr(4), value)) throw std::invalid_argument("");
      } else {
        if (!set_field(o.a2b, name, value)) throw std::invalid_argument("");
        set_field(o.b2a, name, value);
      }
    } catch (const BadValue& e) {
      error = flag + " " + value + ": " + e.what();
      return std::nullopt;
    } catch (const std::invalid_argument&) {
      error = "unknown option " + flag + " (see --help)";
      return std::nullopt;
    }
  }
  if (o.port_a.empty() || o.port_b.empty()) {
    error = "both ports are needed: --a IFACE --b IFACE";
    return std::nullopt;
  }
  if (o.port_a == o.port_b) {
    error = "--a and --b name the same interface " + o.port_a;
    return std::nullopt;
  }
  return o;
}

}  // namespace linkemu
