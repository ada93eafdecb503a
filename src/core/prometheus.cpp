#include "core/prometheus.h"

#include <map>
#include <nlohmann/json.hpp>
#include <string_view>

namespace hooker {
namespace {

// One line on what each counter counts; a counter added without one still
// gets a HELP line naming where it comes from.
const std::map<std::string_view, std::string_view>& helps() {
  static const std::map<std::string_view, std::string_view> h = {
      {"syn_opt_sent", "SYNs that proposed Hooker"},
      {"synack_opt_sent", "SYN-ACKs that accepted Hooker"},
      {"moved_active", "connections moved, connecting side"},
      {"moved_passive", "connections moved, accepting side"},
      {"peer_no_hooker", "SYN-ACKs without the option: the connection stayed TCP"},
      {"no_slot", "connections left TCP because the slot pool was empty"},
      {"bind_failed", "connections left TCP because the kernel could not bind them"},
      {"syncookie", "connections left TCP because the listener was in SYN-cookie mode"},
      {"redirect_miss", "application sends whose slot was gone"},
      {"inject_miss", "hookerd writes whose application socket was gone"},
      {"event_lost", "kernel events lost to a full ring buffer"},
      {"slot_taken", "slots the kernel took from the pool"},
      {"slot_returned", "slots the kernel gave back unused"},
      {"xdp_pass", "Hooker datagrams the ingress program let through"},
      {"xdp_drop_short", "datagrams dropped at ingress: too short for a header"},
      {"xdp_drop_bad_magic", "datagrams dropped at ingress: bad magic"},
      {"xdp_drop_bad_version", "datagrams dropped at ingress: bad version"},
      {"xdp_drop_bad_len", "datagrams dropped at ingress: header and UDP length disagree"},
      {"xdp_drop_unknown_token", "datagrams dropped at ingress: no live connection has the token"},
      {"xdp_fin_ack_held", "ACKs of a held FIN dropped at ingress"},
      {"lane_to_slow", "switches of a connection's sends to the slow lane"},
      {"lane_to_fast", "switches of a connection's sends back to the fast lane"},
      {"sends_full", "application sends refused: too many threads in sends"},
      {"writers_woken", "refused writers woken by a wake ACK"},
      {"wake_failed", "wake ACKs the kernel could not act on"},
      {"mech_not_accepted", "server: SYNs asking for a mechanism the rule refuses"},
      {"peer_refused_mech", "client: SYN-ACKs refusing the mechanism asked for"},
      {"mech_not_deployed", "connections left TCP: the rule's mechanism was not deployed"},
      {"cc_set", "tcp-cc: connections given their rule's congestion control"},
      {"cc_failed", "tcp-cc: connections the kernel refused a congestion control"},
      {"peer_udp_blocked", "connections left TCP: the peer is remembered as unreachable by UDP"},
      {"xdp_path_probe", "path probes to or from a peer unreachable by UDP, let through at ingress"},
      {"path_probes_sent", "path probes sent to peers remembered as unreachable by UDP"},
      {"path_probes_answered", "path probes answered: the peer is reachable by UDP again"},
      {"path_probes_replied", "peers' path probes this hookerd answered"},
      {"path_probes_refused", "peers' path probes left unanswered: over the rate limit or no room"},
      {"peers_marked_unreachable", "peers remembered as unreachable by UDP (each time)"},
      {"rst_injected", "RSTs hookerd sent to reset applications as TCP would"},
      {"delivery_retries", "deliveries that waited for the application to read"},
      {"conns_moved", "connections hookerd carried"},
      {"conns_closed", "connections hookerd retired"},
      {"conns_unknown_mech", "connections reset: they negotiated an undeployed mechanism"},
      {"wake_acks_sent", "wake ACKs sent to writers the slow lane refused"},
      {"wake_acks_failed", "wake ACKs that could not be sent"},
      {"fin_queued", "FINs queued by the FIN hold (NFQUEUE)"},
      {"fin_held", "FINs held until every byte before them was delivered"},
      {"fin_queue_overflows", "times the FIN hold's queue was full: FINs dropped, sent again by TCP"},
      {"fin_released", "held FINs let in"},
      {"slots_created", "slot socket pairs created"},
      {"bytes_sent", "bytes taken from applications and carried to the peer"},
      {"bytes_received", "bytes received from the peer and delivered to applications"},
      {"datagrams_sent", "datagrams sent"},
      {"datagrams_received", "datagrams received"},
      {"datagrams_truncated", "datagrams truncated on receive"},
      {"rx_malformed", "datagrams dropped: malformed"},
      {"rx_unknown_token", "datagrams dropped: no connection has the token"},
      {"rx_wrong_source", "datagrams dropped: from another address than the peer's"},
      {"peer_moved", "datagrams from a new address of the peer (a NAT), sent to from then on"},
      {"keepalives_sent", "keep-alive datagrams of idle connections (NAT mappings)"},
      {"rx_wrong_mech", "datagrams dropped: another mechanism's"},
      {"rx_duplicate", "datagrams dropped: duplicates"},
      {"rx_out_of_order", "datagrams that arrived out of order and were kept"},
      {"rx_beyond_window", "datagrams dropped: beyond the granted window"},
      {"rx_stashed", "datagrams kept for a connection not bound yet"},
      {"resets_sent", "connections reset by this hookerd, peer told"},
      {"resets_received", "connections reset by the peer hookerd"},
      {"resets_lost_datagram", "connections reset: a datagram was lost"},
      {"resets_peer_silent", "connections reset: the peer stopped answering"},
      {"resets_local_failure", "connections reset: this host's side broke"},
      {"resets_app_gone", "connections reset: bytes came for an application socket that was gone"},
      {"resets_peer_unreachable", "connections reset: the peer hookerd was never heard over UDP"},
  };
  return h;
}

std::string escape_help(std::string_view s) {
  std::string o;
  for (char c : s) o += c == '\\' ? "\\\\" : c == '\n' ? "\\n" : std::string(1, c);
  return o;
}

std::string escape_label(std::string_view s) {
  std::string o;
  for (char c : s) o += c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '"' ? "\\\"" : std::string(1, c);
  return o;
}

std::string number(const nlohmann::json& v) {
  if (v.is_number_unsigned()) return std::to_string(v.get<uint64_t>());
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_boolean()) return v.get<bool>() ? "1" : "0";
  if (v.is_number()) return nlohmann::json(v.get<double>()).dump();
  return "";  // not a number: left out
}

// Families keep their samples together: Prometheus wants one HELP/TYPE
// block per name, whatever order the groups come in.
struct Family {
  std::string type, help;
  std::vector<std::pair<std::string, std::string>> samples;  // labels, value
};

}  // namespace

std::string prometheus_name(std::string n) {
  for (size_t i = 0; i < n.size(); i++) {
    char c = n[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) n[i] = '_';
  }
  return n;
}

std::string prometheus_text(const nlohmann::json& stats) {
  std::map<std::string, Family> fam;
  auto add = [&](const std::string& name, const char* type, std::string help,
                 const std::string& labels, const nlohmann::json& v) {
    std::string val = number(v);
    if (val.empty()) return;
    Family& f = fam[prometheus_name(name)];
    if (f.type.empty()) f.type = type, f.help = std::move(help);
    f.samples.emplace_back(labels, val);
  };
  auto help_of = [](const std::string& k, const char* fallback) {
    auto it = helps().find(k);
    return it != helps().end() ? std::string(it->second) : fallback + k;
  };
  // Copies held in locals: a range-for over a temporary's items() would
  // walk a destroyed object (C++20 keeps only the outermost temporary).
  auto part = [](const nlohmann::json& j, const char* key) {
    return j.is_object() && j.contains(key) ? j[key] : nlohmann::json::object();
  };
  const nlohmann::json c = part(stats, "counters"), g = part(stats, "gauges");
  const nlohmann::json kernel = part(c, "kernel"), daemon = part(c, "daemon"),
                       mechs = part(c, "mechanisms"), gmechs = part(g, "mechanisms");
  for (auto& [k, v] : kernel.items())
    add("hooker_kernel_" + k + "_total", "counter", "kernel: " + help_of(k, "BPF counter "), "", v);
  for (auto& [k, v] : daemon.items())
    add("hooker_" + k + "_total", "counter", help_of(k, "hookerd counter "), "", v);
  for (auto& [m, counters] : mechs.items()) {
    std::string label = "mechanism=\"" + escape_label(m) + "\"";
    for (auto& [k, v] : counters.items())
      add("hooker_" + k + "_total", "counter", help_of(k, "mechanism counter "), label, v);
  }
  if (g.contains("uptime_seconds"))
    add("hooker_uptime_seconds", "gauge", "seconds since hookerd started", "",
        g["uptime_seconds"]);
  if (g.contains("udp_unreachable_peers"))
    add("hooker_udp_unreachable_peers", "gauge",
        "peers remembered as unreachable by UDP: their connections stay TCP", "",
        g["udp_unreachable_peers"]);
  for (auto& [m, gm] : gmechs.items()) {
    std::string label = "mechanism=\"" + escape_label(m) + "\"";
    if (gm.contains("deployed"))
      add("hooker_mechanism_deployed", "gauge", "1 while the mechanism is deployed", label,
          gm["deployed"]);
    if (gm.contains("connections"))
      add("hooker_connections", "gauge", "live connections carried by the mechanism", label,
          gm["connections"]);
  }
  std::string out;
  for (auto& [name, f] : fam) {
    out += "# HELP " + name + " " + escape_help(f.help) + "\n";
    out += "# TYPE " + name + " " + f.type + "\n";
    for (auto& [labels, v] : f.samples)
      out += name + (labels.empty() ? "" : "{" + labels + "}") + " " + v + "\n";
  }
  return out;
}

}  // namespace hooker
