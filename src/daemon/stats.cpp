// Every counter (`hookerctl stats`, the metrics endpoint) and each live
// connection (`hookerctl conns`, status), from the same place so they never
// disagree.
#include <sys/socket.h>

#include <nlohmann/json.hpp>

#include "daemon/daemon.h"

namespace hooker {

static const char* kWaitNames[] = {"app_room", "landing"};
static_assert(sizeof(kWaitNames) / sizeof(kWaitNames[0]) == kAppWaitKinds);

nlohmann::json Daemon::conns_json() const {
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
    auto opt = [](const std::optional<uint64_t>& v) { return v ? json(*v) : json(nullptr); };
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
        // null: the mechanism does not count datagrams per connection.
        {"datagrams_out", opt(ms.datagrams_out)},
        {"datagrams_in", opt(ms.datagrams_in)},
        {"drops", ms.drops},
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
  return conns;
}

nlohmann::json Daemon::kernel_counters() const {
  static const char* names[] = {HK_COUNTER_NAMES};
  static_assert(sizeof(names) / sizeof(names[0]) == HK_CNT__MAX);
  nlohmann::json kernel;
  auto k = kernel_->counters();
  for (int i = 0; i < HK_CNT__MAX; i++) kernel[names[i]] = k[i];
  return kernel;
}

nlohmann::json Daemon::daemon_counters() const {
  return {
      {"rst_injected", cnt_.rst_injected},
      {"delivery_retries", cnt_.delivery_retries},
      {"conns_moved", cnt_.conns_moved},
      {"conns_unknown_mech", cnt_.conns_unknown_mech},
      {"fins_before_bind", cnt_.fins_before_bind},
      {"handshakes_completed", cnt_.handshakes_completed},
      {"wake_acks_sent", cnt_.wake_acks_sent},
      {"wake_acks_failed", cnt_.wake_acks_failed},
      {"conns_closed", cnt_.conns_closed},
      {"peers_marked_unreachable", cnt_.peers_marked_unreachable},
      {"path_probes_sent", cnt_.path_probes_sent},
      {"path_probes_answered", cnt_.path_probes_answered},
      {"fin_queued", fins_->queued},
      {"fin_held", fins_->held},
      {"fin_queue_overflows", fins_->overflows},
      {"fin_released", fins_->released},
      {"slots_created", slots_->created()},
      {"slots_reused", slots_->reused()},
  };
}

nlohmann::json Daemon::stats_json() const {
  using nlohmann::json;
  // Bytes per mechanism: the retired connections' plus the live ones' so
  // far (a live count only grows, and moves into carried_ when it ends).
  std::map<uint8_t, Carried> bytes = carried_;
  std::map<uint8_t, uint64_t> live;
  for (auto& c : by_slot_) {
    if (!c || c->retired) continue;
    StreamStatus ms = c->mech->status();
    bytes[c->mech_id].sent += ms.bytes_out;
    bytes[c->mech_id].received += ms.bytes_in;
    live[c->mech_id]++;
  }
  json mechs = json::object(), gauges = json::object();
  for (const MechKind& k : mechanisms()) {
    std::string name(k.name);
    Mechanism* m = deployed_.get(k.id);
    gauges[name] = {{"deployed", m != nullptr}, {"connections", live[k.id]}};
    if (!m && !bytes.count(k.id)) continue;
    json counters = json::object();
    if (m) {
      json s;
      m->status(s);
      counters = s.value("counters", json::object());
    }
    if (k.over) {  // it carries bytes (tcp-cc does not: they stay TCP)
      counters["bytes_sent"] = bytes[k.id].sent;
      counters["bytes_received"] = bytes[k.id].received;
    }
    mechs[name] = counters;
  }
  auto up = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  return {
      {"counters", {{"kernel", kernel_counters()}, {"daemon", daemon_counters()},
                    {"mechanisms", mechs}}},
      {"gauges", {{"uptime_seconds", up},
                  // Peers whose connections stay TCP: UDP does not reach them.
                  {"udp_unreachable_peers", unreachable_json().size()},
                  {"mechanisms", gauges}}},
  };
}

}  // namespace hooker
