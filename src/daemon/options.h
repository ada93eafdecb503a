// hookerd's command line, validated before anything touches the kernel.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/policy.h"
#include "core/result.h"

namespace hooker {

struct Options {
  std::string cgroup;               // default: the cgroup v2 root
  std::vector<std::string> ifaces;
  std::string xdp_mode = "auto";  // auto, native, generic or tc
  uint16_t port = 7000;
  Policy redirect;  // --redirect rules; hookerctl policy changes it live
  std::string control = "/run/hooker/hookerd.sock";
  std::string pin_dir = "/sys/fs/bpf/hooker";
  uint32_t max_conns = 16384;
  bool max_conns_given = false;  // else fitted to the open-files limit
  std::string udplite_impl = "auto";  // kernel, ebpf or auto (kernel where it has UDP-Lite)
  // quic: this hookerd's certificate and key, the CA it trusts (PEM), and
  // the congestion control of its QUIC connections.
  std::string quic_cert, quic_key, quic_ca, quic_cc = "cubic";
  bool eager = false;  // deploy the policy's mechanisms at start, not at first need
  bool verbose = false;
};

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
