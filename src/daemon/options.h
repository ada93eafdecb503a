// hookerd's command line, validated before anything touches the kernel.
#pragma once

#include <cstdint>
#include <optional>
#include <sys/types.h>
#include <string>
#include <vector>

#include "core/endpoint.h"
#include "core/log.h"
#include "core/config.h"
#include "core/policy.h"
#include "core/result.h"
#include "core/rules.h"

namespace hooker {

struct Options {
  // --config FILE: its keys are the flags' defaults (a flag given overrides
  // its key), its [[rule]]s come before the port rules. Empty: none.
  std::string config;
  std::vector<MatchRule> rules;  // the file's, in its order
  std::string cgroup;               // default: the cgroup v2 root
  std::vector<std::string> ifaces;
  std::string xdp_mode = "auto";  // auto, native, generic or tc
  uint16_t port = 7000;
  Policy redirect;  // --redirect rules; hookerctl policy changes it live
  std::string control = "/run/hooker/hookerd.sock";
  // --control-group NAME: its members may use the control socket (0660);
  // without it only root may (0600).
  std::string control_group;
  std::optional<gid_t> control_gid;
  std::optional<Endpoint> metrics;  // --metrics ADDR:PORT; off when empty
  std::string pin_dir = "/sys/fs/bpf/hooker";
  uint32_t max_conns = 16384;
  bool max_conns_given = false;  // else fitted to the open-files limit
  std::string udplite_impl = "auto";  // kernel, ebpf or auto (kernel where it has UDP-Lite)
  // quic: this hookerd's certificate and key, the CA it trusts (PEM), and
  // the congestion control of its QUIC connections.
  std::string quic_cert, quic_key, quic_ca, quic_cc = "bbr";  // beside TCP bbr under loss (README Figures)
  // Keep-alives on an idle moved connection (connecting side), so a NAT's
  // UDP mapping in front of it does not expire; well under common 30 s
  // NAT timeouts by default.
  uint32_t keepalive_s = 25;
  // A peer whose hookerd UDP does not reach stays plain TCP this long,
  // then the next connection to it tries UDP again.
  uint32_t udp_retry_s = 60;
  bool eager = false;  // deploy the policy's mechanisms at start, not at first need
  bool verbose = false;  // -v: the log level debug, unless --log-level says
  log::Level log_level = log::Level::kInfo;  // --log-level / log_level
};

// The file's rules, checked against the machine: each cgroup sub-path is
// resolved under `cgroup` (the served cgroup); errors name the file's line.
Result<hk_rules> compile_file_rules(const std::vector<MatchRule>& rules, const std::string& path,
                                    const std::string& cgroup, uint32_t gen);
// Why a quic rule is refused when hookerd has no certificate.
inline constexpr char kQuicNeedsFiles[] =
    "quic needs hookerd's certificate: start it with --quic-cert FILE --quic-key FILE "
    "--quic-ca FILE (PEM)";

// Parses argv. On --help prints usage and returns an Error with err == 0
// and an empty message (exit 0).
Result<Options> parse_options(int argc, char** argv);

// The cgroup v2 mount point from /proc/self/mounts, or an error saying how
// to mount one.
Result<std::string> cgroup2_root();

}  // namespace hooker
