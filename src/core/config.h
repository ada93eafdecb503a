// hookerd's configuration file (TOML): every flag as a key, plus the policy
// rules flags cannot express ([[rule]] tables, core/rules.h). Parsed and
// checked here, before anything touches the kernel; the command line's flags
// override the file's keys (options.cpp merges them). Every error is one
// line, "FILE:LINE: problem".
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "core/rules.h"

namespace hooker {

struct ConfigFile {
  std::string path;
  std::optional<std::string> cgroup, xdp_mode, control, control_group, metrics, pin_dir,
      udplite_impl, quic_cert, quic_key, quic_ca, quic_cc, log_level;
  std::optional<std::vector<std::string>> ifaces, redirect;
  std::optional<uint16_t> port;
  std::optional<uint32_t> max_conns;
  std::optional<uint32_t> keepalive_s, udp_retry_s;  // keepalive, udp_retry (seconds)
  std::optional<bool> eager, verbose;
  std::vector<MatchRule> rules;
  std::map<std::string, int> line;  // each top-level key's line

  // "FILE:LINE: " for a key the file has, "FILE: " otherwise.
  std::string where(const std::string& key) const;
};

// The keys, for --help and the error on an unknown one.
extern const char* const kConfigKeys;

// A time in seconds (keepalive, udp_retry): "" if in range, else the
// problem, naming `key` (a flag or a file key).
constexpr int64_t kMaxSeconds = 86400;
std::string check_seconds(const std::string& key, int64_t n);

Result<ConfigFile> parse_config(const std::string& text, const std::string& path);
// Reads and parses; an unreadable file is an error naming it.
Result<ConfigFile> load_config(const std::string& path);

}  // namespace hooker
