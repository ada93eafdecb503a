// hookerd's counters in the Prometheus text exposition format (version
// 0.0.4), rendered from the same document `hookerctl stats` shows, so the
// two never disagree.
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

namespace hooker {

// `stats` is the control socket's answer to "stats" (Daemon::stats_json):
//   {"counters": {"kernel": {..}, "daemon": {..},
//                 "mechanisms": {"udp": {..}, ..}},
//    "gauges": {"uptime_seconds": x,
//               "mechanisms": {"udp": {"deployed": 1, "connections": 2}}}}
// Kernel counters become hooker_kernel_NAME_total, the application side's
// hooker_NAME_total, a mechanism's hooker_NAME_total{mechanism="udp"}; every
// family gets its # HELP and # TYPE lines.
std::string prometheus_text(const nlohmann::json& stats);

// A name as Prometheus allows it: [a-zA-Z_:][a-zA-Z0-9_:]*, anything else '_'.
std::string prometheus_name(std::string name);

}  // namespace hooker
