#include "daemon/options.h"

#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <fstream>
#include <sstream>

namespace hooker {

Result<std::string> cgroup2_root() {
  std::ifstream m("/proc/self/mounts");
  std::string line;
  while (std::getline(m, line)) {
    std::istringstream ss(line);
    std::string dev, dir, type;
    ss >> dev >> dir >> type;
    if (type == "cgroup2") return dir;
  }
  return Error{"no cgroup v2 is mounted: mount -t cgroup2 none /sys/fs/cgroup", 0};
}

static bool is_dir(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

Result<Options> parse_options(int argc, char** argv) {
  Options o;
  CLI::App app{"hookerd: moves the data of TCP connections onto another transport"};
  int port = o.port;
  std::vector<std::string> redirect;
  app.add_option("--cgroup", o.cgroup, "cgroup v2 directory whose processes are served (default: the root)");
  app.add_option("--iface", o.ifaces, "interface for the ingress program, XDP or tcx (repeatable)");
  std::string xdp_mode = "auto";
  app.add_option("--xdp-mode", xdp_mode,
                 "where the ingress program runs: auto (default: native, but tc on veth), "
                 "native (XDP in the driver), generic (XDP after the stack builds the "
                 "packet) or tc (a tcx ingress program, same checks)");
  app.add_option("--port", port, "UDP port of this hookerd (default 7000)");
  app.add_option("--redirect", redirect,
                 "PORT[=MECH[,MECH...]]: server TCP port whose connections move, and the "
                 "mechanisms accepted there, the first asked for as a client (default udp; "
                 "repeatable)");
  app.add_option("--control", o.control, "control socket path");
  app.add_option("--pin-dir", o.pin_dir, "bpffs directory for pinned maps");
  auto* max_conns = app.add_option("--max-conns", o.max_conns,
                                   "most connections moved at once (default 16384)");
  app.add_option("--udplite-impl", o.udplite_impl,
                 "who makes udplite's datagrams: kernel (UDP-Lite sockets), ebpf (UDP "
                 "sockets whose datagrams BPF programs turn into UDP-Lite and back) or auto "
                 "(default: kernel where it has UDP-Lite, else ebpf)");
  app.add_option("--quic-cert", o.quic_cert,
                 "quic: this hookerd's certificate (PEM), naming its IP addresses "
                 "(subjectAltName IP) and signed by the CA its peers trust");
  app.add_option("--quic-key", o.quic_key, "quic: the certificate's private key (PEM)");
  app.add_option("--quic-ca", o.quic_ca, "quic: the CA a peer's certificate must chain to (PEM)");
  app.add_option("--quic-cc", o.quic_cc,
                 "quic: congestion control of its QUIC connections, cubic (default) or bbr");
  app.add_flag("--eager", o.eager,
               "deploy every mechanism the policy names at start (default: when the first "
               "connection needs it; that connection stays plain TCP)");
  app.add_flag("-v,--verbose", o.verbose, "log more, including libbpf");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return Error{"", 0};
  } catch (const CLI::ParseError& e) {
    return Error{std::string(e.what()) + " (see hookerd --help)", 0};
  }

  if (xdp_mode != "auto" && xdp_mode != "native" && xdp_mode != "generic" && xdp_mode != "tc")
    return Error{"--xdp-mode " + xdp_mode + ": use auto, native, generic or tc", 0};
  o.xdp_mode = xdp_mode;
  if (o.udplite_impl != "auto" && o.udplite_impl != "kernel" && o.udplite_impl != "ebpf")
    return Error{"--udplite-impl " + o.udplite_impl + ": use kernel, ebpf or auto", 0};
  int quic_files = !o.quic_cert.empty() + !o.quic_key.empty() + !o.quic_ca.empty();
  if (quic_files != 0 && quic_files != 3)
    return Error{"quic needs all three: --quic-cert FILE --quic-key FILE --quic-ca FILE", 0};
  if (o.quic_cc != "cubic" && o.quic_cc != "bbr")
    return Error{"--quic-cc " + o.quic_cc + ": use cubic or bbr", 0};
  if (port < 1 || port > 65535)
    return Error{"--port " + std::to_string(port) + " is out of range: use 1..65535", 0};
  o.port = static_cast<uint16_t>(port);
  if (redirect.empty())
    return Error{"nothing to move: give at least one --redirect PORT (the server's TCP port)", 0};
  for (auto& text : redirect) {
    auto r = parse_rule(text);
    if (!r) return Error{"--redirect " + text + ": " + r.error().what, 0};
    // A usage error, found before anything is set up: quic without its files.
    bool quic = std::find(r->mechs.begin(), r->mechs.end(), HK_MECH_QUIC) != r->mechs.end();
    if (quic && quic_files == 0)
      return Error{"--redirect " + text + ": " + kQuicNeedsFiles, 0};
    if (auto s = o.redirect.add(r.take()); !s)
      return Error{"--redirect " + text + ": " + s.error().what, 0};
  }
  if (o.max_conns < 16 || o.max_conns > 65536)
    return Error{"--max-conns must be 16..65536", 0};
  o.max_conns_given = max_conns->count() > 0;
  if (geteuid() != 0)
    return Error{"must run as root (it loads BPF programs and NFQUEUE rules): sudo hookerd ...", 0};
  auto root = cgroup2_root();
  if (!root) return root.error();
  if (o.cgroup.empty()) o.cgroup = *root;
  if (!is_dir(o.cgroup))
    return Error{"cgroup " + o.cgroup + " does not exist: create it (mkdir) or pick one under " +
                     *root, 0};
  return o;
}

}  // namespace hooker
