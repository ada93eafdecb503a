// The control socket: one request line in, one JSON document out.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "daemon/daemon.h"
#include "daemon/policy_ctl.h"
#include "core/log.h"

namespace hooker {


Status Daemon::open_control() {
  // A directory made here is searchable by all (whatever the umask, 0077
  // under the systemd unit): the socket's own mode decides who connects.
  std::vector<std::filesystem::path> made;
  std::error_code ec;
  for (auto d = std::filesystem::path(opt_.control).parent_path();
       !d.empty() && d != d.root_path() && !std::filesystem::exists(d, ec); d = d.parent_path())
    made.push_back(d);
  for (auto it = made.rbegin(); it != made.rend(); ++it)
    if (mkdir(it->c_str(), 0755) == 0) chmod(it->c_str(), 0755);
  control_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (opt_.control.size() >= sizeof(sa.sun_path))
    return Error{"control socket path too long: " + opt_.control, 0};
  std::strncpy(sa.sun_path, opt_.control.c_str(), sizeof(sa.sun_path) - 1);
  if (connect(control_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0)
    return Error{"another hookerd answers on " + opt_.control + ": give this one --control PATH",
                 0};
  control_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  unlink(opt_.control.c_str());  // stale: nobody answered
  // Connecting needs write permission on the socket file: the file is born
  // 0600 (no moment where others may connect), then opened to the group.
  mode_t old = umask(0177);
  int b = bind(control_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  umask(old);
  if (b < 0 || listen(control_.get(), 16) < 0)
    return sys_error("listen on control socket " + opt_.control);
  if (opt_.control_gid) {
    if (chown(opt_.control.c_str(), 0, *opt_.control_gid) < 0)
      return sys_error("chown " + opt_.control + " to group " + opt_.control_group);
    if (chmod(opt_.control.c_str(), 0660) < 0) return sys_error("chmod 0660 " + opt_.control);
  }
  return ok();
}

std::string Daemon::status_json() const {
  using nlohmann::json;
  auto now = std::chrono::steady_clock::now();
  json conns = conns_json();
  json kernel = kernel_counters();
  // The application side's counters, then the mechanisms' (their names
  // stay flat here, as before the split, and also under "mechanisms").
  json daemon = daemon_counters();
  json mechs = json::object();
  deployed_.for_each([&](const MechKind& kind, Mechanism& mech) {
    json m;
    mech.status(m);
    // Flat: summed over the mechanisms (each one's own are under "mechanisms").
    for (auto& [k, v] : m["counters"].items())
      daemon[k] = daemon.value(k, uint64_t{0}) + v.get<uint64_t>();
    mechs[std::string(kind.name)] = m;
  });
  json udp_queue = mechs.contains("udp") ? mechs["udp"]["queue"] : json(nullptr);
  json j = {
      {"hookerd", {{"pid", getpid()},
                   {"udp_port", opt_.port},
                   {"cgroup", opt_.cgroup},
                   {"ifaces", opt_.ifaces},
                   {"redirect", policy_json(opt_.redirect)},
                   {"config", opt_.config},
                   {"file_rules", file_rules_json()},
                   {"ready_ms", ready_ms},
                   {"control_group", opt_.control_group},
                   {"log_level", log::level_name(log::level())},
                   {"metrics", opt_.metrics ? json(opt_.metrics->str()) : json(nullptr)},
                   {"startup_ms", startup_ms},
                   {"uptime_s", std::chrono::duration<double>(now - started_).count()},
                   // Datagrams queued for the UDP socket; blocked: the socket
                   // is full and hookerd waits for it (EPOLLOUT).
                   {"udp_queue", udp_queue}}},
      // Peers UDP does not reach: their connections stay TCP until retry.
      {"udp_unreachable", unreachable_json()},
      {"mechanisms", mechs},
      {"connections", conns},
      {"counters", {{"kernel", kernel}, {"daemon", daemon}}},
  };
  return j.dump(2) + "\n";
}

void Daemon::on_control() {
  // One request per loop turn: what a request retires (an undeployed
  // mechanism, with its sockets and BPF objects) is freed at the end of the
  // turn, before the next request may need it again (deploy right after
  // undeploy: the port, the algorithm's name). The listening socket stays
  // readable for the requests waiting (level-triggered).
  int fd = accept4(control_.get(), nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) return;
  Fd client(fd);
  // The request is one short line; a client that does not send it within
  // the timeout gets nothing, and hookerd moves on.
  timeval tv{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  char buf[4352];  // deploy NAME --object FILE: a path up to PATH_MAX
  ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
  if (n <= 0) return;
  std::string req(buf, static_cast<size_t>(n));
  while (!req.empty() && (req.back() == '\n' || req.back() == '\r')) req.pop_back();
  std::string out;
  if (req == "status") {
    out = status_json();
  } else if (req == "stats") {
    out = stats_json().dump(2) + "\n";
  } else if (req == "conns") {
    out = nlohmann::json({{"connections", conns_json()}}).dump(2) + "\n";
  } else if (req == "policy reload") {
    out = reload_policy().dump(2) + "\n";
  } else if (req == "policy" || req.starts_with("policy ")) {
    // Moved connections on a port keep their FINs held after its rule
    // goes (FinHold::keep_until_idle).
    auto in_use = [this](uint16_t port) {
      for (auto& c : by_slot_)
        if (c && (c->app.lport == port || c->app.rport == port)) return true;
      return false;
    };
    // With --eager a new rule's mechanisms are deployed with it.
    auto added = [this](const PortRule& r) {
      std::string warn;
      for (uint8_t id : r.mechs) {
        const MechKind* k = find_mechanism(id);
        if (!k || deployed_.get(id)) continue;
        std::string name(k->name);
        if (deployed_.held_back(*k))  // an undeploy by hand stands
          warn += name + " is undeployed: connections on this rule stay TCP until "
                  "hookerctl deploy " + name + ". ";
        else if (opt_.eager)
          if (auto s = deployed_.deploy(*k, "policy add " + r.str() + " (--eager)"); !s)
            warn += s.error().message() + ". ";
      }
      return warn;
    };
    auto mechs = [this] {
      return deployed_.json([this](uint8_t id) { return users_of(id).size(); });
    };
    out = policy_request(req.substr(6), {opt_.redirect, *kernel_, *fins_, in_use,
                                         [this](const PortRule& r) {
                                           return check_rule(r, deployed_.config());
                                         },
                                         added, mechs});
    // The file's rules come first: policy list shows them too.
    if (req == "policy list") {
      auto j = nlohmann::json::parse(out, nullptr, false);
      if (j.is_object()) {
        j["file_rules"] = file_rules_json();
        j["config"] = opt_.config;
        out = j.dump(2) + "\n";
      }
    }
  } else if (req == "mechanisms" || req.starts_with("deploy ") ||
             req.starts_with("undeploy ")) {
    out = mech_request(req);
  } else {
    out = nlohmann::json({{"error", "unknown request '" + req +
                                        "': use status, stats, conns, policy list|add|del|reload, mechanisms, "
                                        "deploy NAME [--object FILE] or undeploy NAME "
                                        "[--force]"}})
              .dump() + "\n";
  }
  for (size_t off = 0; off < out.size();) {
    ssize_t w = send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
    if (w <= 0) break;
    off += static_cast<size_t>(w);
  }
}

}  // namespace hooker
