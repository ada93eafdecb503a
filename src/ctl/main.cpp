// hookerctl: asks a running hookerd what it is doing, and changes its policy.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace {

// Sends one request line and returns the whole answer, or an empty string
// with `err` set.
std::string ask(const std::string& path, const std::string& req, std::string& err) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) < 0) {
    // The socket file's mode says who may ask (hookerd --control-group).
    if (errno == EACCES || errno == EPERM)
      err = "permission denied: " + path + " is for root and hookerd's --control-group only "
            "(run as root, or join that group)";
    else
      err = "no hookerd answers on " + path + " (" + std::strerror(errno) +
          "): is it running? Point at its socket with --control PATH";
    close(fd);
    return {};
  }
  std::string line = req + "\n";
  (void)!write(fd, line.data(), line.size());
  std::string out;
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  if (n < 0) err = "hookerd on " + path + " did not answer in time";
  close(fd);
  return out;
}

void print_status(const nlohmann::json& j) {
  auto& h = j["hookerd"];
  printf("hookerd pid %d, UDP port %d, cgroup %s, up %.1f s\n", h["pid"].get<int>(),
         h["udp_port"].get<int>(), h["cgroup"].get<std::string>().c_str(),
         h["uptime_s"].get<double>());
  printf("%-4s %-42s %-42s %-5s %12s %12s  %s\n", "SIDE", "LOCAL", "REMOTE", "MECH", "BYTES_OUT",
         "BYTES_IN", "STATE");
  for (auto& c : j["connections"]) {
    auto ep = [&](const char* a, const char* p) {
      std::string s = c[a].get<std::string>();
      if (c["family"] == "ipv6") s = "[" + s + "]";
      return s + ":" + std::to_string(c[p].get<int>());
    };
    printf("%-4s %-42s %-42s %-5s %12llu %12llu  %s\n",
           c["side"] == "client" ? "cli" : "srv", ep("local", "local_port").c_str(),
           ep("remote", "remote_port").c_str(), c["mechanism"].get<std::string>().c_str(),
           c["bytes_out"].get<unsigned long long>(), c["bytes_in"].get<unsigned long long>(),
           c["state"].get<std::string>().c_str());
  }
  // Peers UDP does not reach: their connections stay plain TCP until then.
  for (auto& p : j.value("udp_unreachable", nlohmann::json::array()))
    printf("udp unreachable: %s (since %.0f s; UDP tried again in %.0f s)\n",
           p["peer"].get<std::string>().c_str(), p["since_s"].get<double>(),
           p["retry_in_s"].get<double>());
  for (auto* group : {"kernel", "daemon"})
    for (auto& [k, v] : j["counters"][group].items())
      if (v.get<unsigned long long>()) printf("  %s.%s %llu\n", group, k.c_str(), v.get<unsigned long long>());
}

// Every counter, zeros included: the kernel's, the application side's, and
// each mechanism's.
void print_stats(const nlohmann::json& j) {
  auto& c = j["counters"];
  printf("%-10s %-24s %20s\n", "GROUP", "COUNTER", "VALUE");
  auto rows = [](const std::string& group, const nlohmann::json& counters) {
    for (auto& [k, v] : counters.items())
      printf("%-10s %-24s %20llu\n", group.c_str(), k.c_str(), v.get<unsigned long long>());
  };
  rows("kernel", c["kernel"]);
  rows("daemon", c["daemon"]);
  for (auto& [m, counters] : c["mechanisms"].items()) rows(m, counters);
  if (j["gauges"].contains("udp_unreachable_peers"))
    printf("%-10s %-24s %20llu\n", "gauges", "udp_unreachable_peers",
           j["gauges"]["udp_unreachable_peers"].get<unsigned long long>());
  for (auto& [m, g] : j["gauges"]["mechanisms"].items())
    printf("%-10s %-24s %20s\n", m.c_str(), "deployed / live conns",
           ((g["deployed"].get<bool>() ? "yes / " : "no / ") +
            std::to_string(g["connections"].get<unsigned long long>())).c_str());
}

std::string endpoint(const nlohmann::json& c, const char* a, const char* p) {
  std::string s = c[a].get<std::string>();
  if (c["family"] == "ipv6") s = "[" + s + "]";
  return s + ":" + std::to_string(c[p].get<int>());
}

std::string count_or_dash(const nlohmann::json& v) {
  return v.is_null() ? "-" : std::to_string(v.get<unsigned long long>());
}

// Each live connection; "-" where the mechanism does not count datagrams.
void print_conns(const nlohmann::json& conns) {
  printf("%-4s %-30s %-30s %-8s %12s %12s %9s %9s %6s %8s\n", "SIDE", "LOCAL", "REMOTE", "MECH",
         "BYTES_OUT", "BYTES_IN", "DGRAM_OUT", "DGRAM_IN", "DROPS", "AGE_S");
  for (auto& c : conns)
    printf("%-4s %-30s %-30s %-8s %12llu %12llu %9s %9s %6llu %8.1f\n",
           c["side"] == "client" ? "cli" : "srv", endpoint(c, "local", "local_port").c_str(),
           endpoint(c, "remote", "remote_port").c_str(), c["mechanism"].get<std::string>().c_str(),
           c["bytes_out"].get<unsigned long long>(), c["bytes_in"].get<unsigned long long>(),
           count_or_dash(c["datagrams_out"]).c_str(), count_or_dash(c["datagrams_in"]).c_str(),
           c["drops"].get<unsigned long long>(), c["age_s"].get<double>());
}

void print_mechanisms(const nlohmann::json& mechs) {
  printf("%-9s %-13s %5s %9s  %s\n", "NAME", "STATE", "CONNS", "LOAD_MS", "LOADED / WHY");
  for (auto& m : mechs) {
    std::string load = m.contains("load_ms") ? std::to_string(m["load_ms"].get<double>()) : "-";
    printf("%-9s %-13s %5llu %9.9s  ", m["name"].get<std::string>().c_str(),
           m["state"].get<std::string>().c_str(), m["connections"].get<unsigned long long>(),
           load.c_str());
    std::string what;
    for (auto& l : m["loaded"]) what += (what.empty() ? "" : "; ") + l.get<std::string>();
    if (m.contains("trigger")) what += (what.empty() ? "" : "; ") + m["trigger"].get<std::string>();
    if (m.contains("last_error")) what += "; failed: " + m["last_error"].get<std::string>();
    printf("%s\n", what.c_str());
  }
}

// The file's rules first (they decide first), then the port rules.
void print_file_rules(const nlohmann::json& rules) {
  if (!rules.is_array() || rules.empty()) return;
  printf("%-5s %s\n", "LINE", "FILE RULE (first match wins)");
  for (auto& r : rules) printf("%-5d %s\n", r["line"].get<int>(), r["rule"].get<std::string>().c_str());
  printf("\n");
}

void print_policy(const nlohmann::json& rules) {
  printf("%-6s %-24s %s\n", "PORT", "ACCEPTS", "ASKS");
  for (auto& r : rules) {
    std::string accept;
    for (auto& m : r["accept"]) accept += (accept.empty() ? "" : ",") + m.get<std::string>();
    printf("%-6d %-24s %s\n", r["port"].get<int>(), accept.c_str(),
           r["ask"].get<std::string>().c_str());
  }
}

// Whether the answer goes to a machine: --json anywhere on the line, so
// even a line that does not parse gets its error as JSON.
bool wants_json(int argc, char** argv) {
  for (int i = 1; i < argc; i++)
    if (std::strcmp(argv[i], "--json") == 0) return true;
  return false;
}

// An error, and the exit code: with --json a JSON object {"error": ...} on
// stdout (where the machine reads the answer), else a line on stderr.
int fail(bool json, const std::string& why, int code) {
  if (json)
    printf("%s\n", nlohmann::json({{"error", why}}).dump(2).c_str());
  else
    fprintf(stderr, "hookerctl: %s\n", why.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hookerctl: inspect a running hookerd and change its policy"};
  std::string control = "/run/hooker/hookerd.sock";
  bool json = false;
  app.add_option("--control", control, "hookerd's control socket");
  // Every command answers in JSON with --json (given before or after it),
  // errors included: {"error": "..."} and a non-zero exit.
  app.add_flag("--json", json, "machine-readable output, errors too");
  auto* status = app.add_subcommand("status", "live connections and every counter");
  status->add_flag("--json", json, "machine-readable output");
  auto* stats = app.add_subcommand("stats", "every counter: the kernel's, hookerd's, each "
                                            "mechanism's (the metrics endpoint's too)");
  stats->add_flag("--json", json, "machine-readable output");
  auto* conns = app.add_subcommand("conns", "each live connection: addresses, mechanism, "
                                            "bytes and datagrams each way, drops, age");
  conns->add_flag("--json", json, "machine-readable output");
  auto* policy = app.add_subcommand("policy", "which new connections move, and onto what");
  policy->require_subcommand(1);
  std::string rule, port;
  auto* add = policy->add_subcommand("add", "move new connections on PORT (default mechanism: udp)");
  add->add_option("rule", rule, "PORT[=MECH[:OPTS][,MECH...]]: the first mechanism is asked for "
                                "as a client, all are accepted as a server; PORT=tcp-cc:NAME "
                                "keeps the port's connections TCP with congestion control NAME")
      ->required();
  add->add_flag("--json", json, "machine-readable output");
  auto* del = policy->add_subcommand("del", "new connections on PORT stay TCP");
  del->add_option("port", port, "the port of a rule")->required();
  del->add_flag("--json", json, "machine-readable output");
  auto* list = policy->add_subcommand("list", "the rules: the configuration file's, then the ports'");
  list->add_flag("--json", json, "machine-readable output");
  auto* reload = policy->add_subcommand(
      "reload", "read the configuration file's rules again: new connections follow them, live "
                "ones keep theirs; a file with an error changes nothing");
  reload->add_flag("--json", json, "machine-readable output");
  auto* mechs = app.add_subcommand("mechanisms", "each mechanism: deployed or not, what it "
                                                 "loaded, its load cost, connections on it");
  mechs->add_flag("--json", json, "machine-readable output");
  std::string name, object;
  bool force = false;
  auto* deploy = app.add_subcommand("deploy", "deploy a mechanism now (else the first "
                                              "connection needing it does)");
  deploy->add_option("name", name, "mechanism (hookerctl mechanisms lists them)")->required();
  deploy->add_option("--object", object,
                     "tcp-cc: a BPF object with your congestion control(s) (struct_ops "
                     "tcp_congestion_ops), loaded and registered; rules may then name them");
  deploy->add_flag("--json", json, "machine-readable output");
  auto* undeploy = app.add_subcommand("undeploy", "stop carrying connections with a mechanism; "
                                                  "new ones on its rules stay TCP until deploy");
  undeploy->add_option("name", name, "mechanism")->required();
  undeploy->add_flag("--force", force, "reset the connections using it (else refused)");
  undeploy->add_flag("--json", json, "machine-readable output");
  app.require_subcommand(1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return fail(wants_json(argc, argv), std::string(e.what()) + " (see hookerctl --help)", 2);
  }
  // hookerd checks the rule and the port: one place says what is wrong.
  // hookerd opens the object: the path must not depend on our directory.
  if (!object.empty()) object = std::filesystem::absolute(object).lexically_normal().string();
  std::string req = status->parsed()   ? "status"
                    : stats->parsed()    ? "stats"
                    : conns->parsed()    ? "conns"
                    : add->parsed()      ? "policy add " + rule
                    : del->parsed()      ? "policy del " + port
                    : reload->parsed()   ? "policy reload"
                    : mechs->parsed()    ? "mechanisms"
                    : deploy->parsed()   ? "deploy " + name + (object.empty() ? "" : " --object " + object)
                    : undeploy->parsed() ? "undeploy " + name + (force ? " --force" : "")
                                         : "policy list";
  std::string err;
  std::string out = ask(control, req, err);
  if (!err.empty()) return fail(json, err, 1);
  auto j = nlohmann::json::parse(out, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail(json, "bad answer from hookerd: " + out, 1);
  // hookerd's refusal is already {"error": ...}: as it is, with --json.
  if (j.contains("error")) return fail(json, j["error"].get<std::string>(), 1);
  if (j.contains("warning"))
    fprintf(stderr, "hookerctl: warning: %s\n", j["warning"].get<std::string>().c_str());
  if (json)
    fputs(out.c_str(), stdout);
  else if (status->parsed())
    print_status(j);
  else if (stats->parsed())
    print_stats(j);
  else if (conns->parsed())
    print_conns(j["connections"]);
  else if (list->parsed()) {
    if (j.contains("file_rules")) print_file_rules(j["file_rules"]);
    print_policy(j["policy"]);
  } else if (reload->parsed()) {
    printf("reloaded %s: %zu rule(s)\n", j["reloaded"].get<std::string>().c_str(), j["rules"].size());
    print_file_rules(j["rules"]);
  }
  else if (mechs->parsed())
    print_mechanisms(j["mechanisms"]);
  else if (deploy->parsed() && !object.empty()) {
    std::string what;
    for (auto& l : j["added"]) what += (what.empty() ? "" : "; ") + l.get<std::string>();
    printf("%s: registered %s\n", name.c_str(), what.c_str());
  } else if (deploy->parsed())
    printf("%s deployed\n", name.c_str());
  else if (undeploy->parsed())
    printf("undeployed %s (%llu connection(s) reset)\n", name.c_str(),
           j["connections_reset"].get<unsigned long long>());
  else
    printf("%s %s\n", add->parsed() ? "added" : "removed",
           j[add->parsed() ? "added" : "removed"].get<std::string>().c_str());
  return 0;
}
