// The control socket: one request line in, one JSON document out.
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "daemon/daemon.h"
#include "daemon/policy_ctl.h"

namespace hooker {

static const char* kCounterNames[] = {HK_COUNTER_NAMES};
static_assert(sizeof(kCounterNames) / sizeof(kCounterNames[0]) == HK_CNT__MAX);
static const char* kWaitNames[] = {"app_room", "landing"};
static_assert(sizeof(kWaitNames) / sizeof(kWaitNames[0]) == kAppWaitKinds);

std::string Daemon::status_json() const {
  using nlohmann::json;
  json conns = json::array();
  auto now = std::chrono::steady_clock::now();
  for (auto& c : by_slot_) {
    if (!c) continue;
    StreamStatus ms = c->mech->status();
    json waiting = json::array();  // what it waits for, in either layer's lists
    for (const char* w : ms.waiting) waiting.push_back(w);
    for (int w = 0; w < kAppWaitKinds; w++)
      if (c->waiting[w]) waiting.push_back(kWaitNames[w]);
    const MechKind* kind = find_mechanism(c->mech_id);
    conns.push_back({
        {"local", addr_str(c->app, true)},
        {"local_port", c->app.lport},
        {"remote", addr_str(c->app, false)},
        {"remote_port", c->app.rport},
        {"family", c->app.family == AF_INET ? "ipv4" : "ipv6"},
        {"mechanism", kind ? kind->name : "?"},
        {"side", c->active ? "client" : "server"},
        {"bytes_out", ms.bytes_out},
        // The application's sends: the lane they take now, and what they
        // returned that hookerd has not read yet (hk_lanes).
        {"send_lane", (c->lanes->mode & HK_LANE_SLOW) ? "slow" : "fast"},
        // (hookerd may have read ahead of that count while a send runs.)
        {"send_backlog", c->lanes->sent > c->taken ? c->lanes->sent - c->taken : 0},
        {"bytes_in", ms.bytes_in},
        {"state", c->state(ms.peer_end.has_value())},
        {"age_s", std::chrono::duration<double>(now - c->since).count()},
        {"slot", c->slot},
        {"app_shut_wr", c->app_shut_wr},
        {"app_gone", c->app_gone},
        {"end_sent", ms.end_sent},
        {"peer_end", ms.peer_end ? json(*ms.peer_end) : json(nullptr)},
        {"held_fins", c->held_fins.size()},
        {"waiting", waiting},
    });
  }
  json kernel;
  auto k = kernel_->counters();
  for (int i = 0; i < HK_CNT__MAX; i++) kernel[kCounterNames[i]] = k[i];
  // The application side's counters, then the mechanisms' (their names
  // stay flat here, as before the split, and also under "mechanisms").
  json daemon = {
      {"rst_injected", cnt_.rst_injected},
      {"delivery_retries", cnt_.delivery_retries},
      {"conns_moved", cnt_.conns_moved},
      {"conns_unknown_mech", cnt_.conns_unknown_mech},
      {"wake_acks_sent", cnt_.wake_acks_sent},
      {"wake_acks_failed", cnt_.wake_acks_failed},
      {"conns_closed", cnt_.conns_closed},
      {"fin_queued", fins_->queued},
      {"fin_held", fins_->held},
      {"fin_released", fins_->released},
      {"slots_created", slots_->created()},
  };
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
                   {"ready_ms", ready_ms},
                   {"startup_ms", startup_ms},
                   {"uptime_s", std::chrono::duration<double>(now - started_).count()},
                   // Datagrams queued for the UDP socket; blocked: the socket
                   // is full and hookerd waits for it (EPOLLOUT).
                   {"udp_queue", udp_queue}}},
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
  } else if (req == "mechanisms" || req.starts_with("deploy ") ||
             req.starts_with("undeploy ")) {
    out = mech_request(req);
  } else {
    out = nlohmann::json({{"error", "unknown request '" + req +
                                        "': use status, policy list|add|del, mechanisms, "
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
