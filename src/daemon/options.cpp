#include "daemon/options.h"

#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>

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
                 "PORT[=MECH[:OPTS][,MECH...]]: server TCP port whose connections move, and the "
                 "mechanisms accepted there, the first asked for as a client (default udp; "
                 "udplite:cov=N, quic:cc=cubic|bbr, tcp-cc:NAME; repeatable)");
  app.add_option("--control", o.control, "control socket path");
  app.add_option("--control-group", o.control_group,
                 "group whose members may use the control socket (mode 0660); default: "
                 "root only (0600)");
  std::string metrics;
  app.add_option("--metrics", metrics,
                 "serve Prometheus metrics at http://ADDR:PORT/metrics (PORT alone: "
                 "127.0.0.1; [::1]:PORT for IPv6); default off");
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
                 "quic: congestion control of QUIC connections whose rule names none "
                 "(quic:cc=ALG), bbr (default) or cubic");
  int64_t keepalive = o.keepalive_s, udp_retry = o.udp_retry_s;
  app.add_option("--keepalive", keepalive,
                 "seconds between keep-alive datagrams of an idle moved connection, sent by "
                 "the connecting side so a NAT's UDP mapping stays open (default 25)");
  app.add_option("--udp-retry", udp_retry,
                 "seconds a peer that UDP does not reach (its hookerd never answered) stays "
                 "plain TCP before a connection tries UDP again (default 60)");
  app.add_flag("--eager", o.eager,
               "deploy every mechanism the policy names at start (default: when the first "
               "connection needs it; that connection stays plain TCP)");
  app.add_flag("-v,--verbose", o.verbose, "log everything: --log-level debug");
  std::string log_level;
  app.add_option("--log-level", log_level,
                 "error, warn, info (default: also one line per connection moved, refused "
                 "or reset, at most 10 a second) or debug (also libbpf's messages)");
  app.add_option("--config", o.config,
                 "TOML configuration file: a key per flag (flags given here override it) and "
                 "[[rule]] tables matching prefixes, port ranges and cgroups (README: Policy)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return Error{"", 0};
  } catch (const CLI::ParseError& e) {
    return Error{std::string(e.what()) + " (see hookerd --help)", 0};
  }
  // The file fills in what the command line did not give.
  std::optional<ConfigFile> file;
  if (!o.config.empty()) {
    auto c = load_config(o.config);
    if (!c) return c.error();
    file = c.take();
    auto given = [&app](const char* flag) { return app.get_option(flag)->count() > 0; };
    auto take = [&](const char* flag, auto& into, const auto& from) {
      if (from && !given(flag)) into = *from;
    };
    take("--cgroup", o.cgroup, file->cgroup);
    take("--iface", o.ifaces, file->ifaces);
    take("--xdp-mode", xdp_mode, file->xdp_mode);
    std::optional<int> fport;
    if (file->port) fport = *file->port;
    take("--port", port, fport);
    take("--redirect", redirect, file->redirect);
    take("--control", o.control, file->control);
    take("--control-group", o.control_group, file->control_group);
    take("--metrics", metrics, file->metrics);
    take("--pin-dir", o.pin_dir, file->pin_dir);
    take("--max-conns", o.max_conns, file->max_conns);
    take("--udplite-impl", o.udplite_impl, file->udplite_impl);
    take("--quic-cert", o.quic_cert, file->quic_cert);
    take("--quic-key", o.quic_key, file->quic_key);
    take("--quic-ca", o.quic_ca, file->quic_ca);
    take("--quic-cc", o.quic_cc, file->quic_cc);
    std::optional<int64_t> fka, fretry;
    if (file->keepalive_s) fka = *file->keepalive_s;
    if (file->udp_retry_s) fretry = *file->udp_retry_s;
    take("--keepalive", keepalive, fka);
    take("--udp-retry", udp_retry, fretry);
    take("--eager", o.eager, file->eager);
    take("--verbose", o.verbose, file->verbose);
    // -v on the command line overrides the file's log_level too.
    if (!given("--verbose")) take("--log-level", log_level, file->log_level);
    o.rules = file->rules;
  }
  // Where a value came from, for its error: the flag, or the file's line.
  auto from = [&](const char* flag, const char* key) -> std::string {
    if (file && file->line.count(key) && app.get_option(flag)->count() == 0)
      return file->where(key) + key + " ";
    return std::string(flag) + " ";
  };

  if (!log_level.empty()) {
    auto l = log::parse_level(log_level);
    if (!l) return Error{from("--log-level", "log_level") + log_level + ": use error, warn, "
                                                                           "info or debug", 0};
    o.log_level = *l;
  } else if (o.verbose) {
    o.log_level = log::Level::kDebug;
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
  if (auto e = check_seconds("--keepalive", keepalive); !e.empty()) return Error{e, 0};
  if (auto e = check_seconds("--udp-retry", udp_retry); !e.empty()) return Error{e, 0};
  o.keepalive_s = static_cast<uint32_t>(keepalive);
  o.udp_retry_s = static_cast<uint32_t>(udp_retry);
  if (redirect.empty() && o.rules.empty())
    return Error{"nothing to move: give at least one --redirect PORT (the server's TCP port), "
                 "or a configuration file with rules (--config)", 0};
  for (auto& text : redirect) {
    auto r = parse_rule(text);
    if (!r) return Error{from("--redirect", "redirect") + text + ": " + r.error().what, 0};
    // A usage error, found before anything is set up: quic without its files.
    bool quic = std::find(r->mechs.begin(), r->mechs.end(), HK_MECH_QUIC) != r->mechs.end();
    if (quic && quic_files == 0)
      return Error{from("--redirect", "redirect") + text + ": " + kQuicNeedsFiles, 0};
    if (auto s = o.redirect.add(r.take()); !s)
      return Error{from("--redirect", "redirect") + text + ": " + s.error().what, 0};
  }
  if (!metrics.empty()) {
    auto e = parse_endpoint(metrics);
    if (!e) return Error{from("--metrics", "metrics") + metrics + ": " + e.error().what, 0};
    o.metrics = *e;
  }
  if (!o.control_group.empty()) {
    group* g = getgrnam(o.control_group.c_str());
    if (!g)
      return Error{from("--control-group", "control_group") + o.control_group +
                       ": no such group (getent group lists them; groupadd makes one)", 0};
    o.control_gid = g->gr_gid;
  }
  if (o.max_conns < 16 || o.max_conns > 65536)
    return Error{"--max-conns must be 16..65536", 0};
  o.max_conns_given = max_conns->count() > 0 || (file && file->max_conns);
  if (geteuid() != 0)
    return Error{"must run as root (it loads BPF programs and NFQUEUE rules): sudo hookerd ...", 0};
  auto root = cgroup2_root();
  if (!root) return root.error();
  if (o.cgroup.empty()) o.cgroup = *root;
  if (!is_dir(o.cgroup))
    return Error{from("--cgroup", "cgroup") + o.cgroup +
                     " does not exist: create it (mkdir) or pick one under " + *root, 0};
  // The rules' cgroups exist, under the served one: refused now, not at load.
  if (!o.rules.empty())
    if (auto t = compile_file_rules(o.rules, o.config, o.cgroup, 0); !t) return t.error();
  return o;
}

Result<hk_rules> compile_file_rules(const std::vector<MatchRule>& rules, const std::string& path,
                                    const std::string& cgroup, uint32_t gen) {
  auto root = cgroup2_root();
  if (!root) return root.error();
  // A cgroup v2 directory's inode is its cgroup id; its depth is how many
  // directories it is below the mount.
  CgroupResolver resolve = [&](const std::string& sub) -> Result<CgroupRef> {
    std::string dir = cgroup + "/" + sub;
    struct stat st;
    if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      return Error{"cgroup " + sub + ": no such cgroup under " + cgroup + " (" + dir +
                       "): create it (mkdir) or fix the path", 0};
    char real[PATH_MAX];
    if (!realpath(dir.c_str(), real)) return sys_error("cgroup " + sub + ": resolve " + dir);
    std::string r = real, m = *root;
    if (r.compare(0, m.size(), m) != 0)
      return Error{"cgroup " + sub + ": " + r + " is not under the cgroup v2 mount " + m, 0};
    uint8_t level = 0;
    for (size_t i = m.size(); i < r.size(); i++) level += r[i] == '/' && i + 1 < r.size();
    if (r.size() > m.size() && m != "/" && r[m.size()] != '/')
      return Error{"cgroup " + sub + ": " + r + " is not under the cgroup v2 mount " + m, 0};
    return CgroupRef{static_cast<uint64_t>(st.st_ino), level};
  };
  auto t = compile_rules(rules, resolve, gen);
  if (!t) return Error{path + ":" + t.error().what.substr(5), t.error().err};  // "line N: "
  return t;
}

}  // namespace hooker
