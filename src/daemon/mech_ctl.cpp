// `mechanisms`, `deploy NAME [--object FILE]`, `undeploy NAME [--force]` on
// the control socket, and deployment at a connection's first need.
#include <algorithm>
#include <sstream>

#include <nlohmann/json.hpp>

#include "daemon/daemon.h"

namespace hooker {

namespace {
using nlohmann::json;

json refused(const std::string& why) { return {{"error", why}}; }

std::string known_list() {
  std::string s;
  for (const MechKind& k : mechanisms()) s += (s.empty() ? "" : ", ") + std::string(k.name);
  return s;
}

std::string endpoint(const hk_flow& f, bool local) {
  std::string a = addr_str(f, local);
  if (f.family != AF_INET) a = "[" + a + "]";
  return a + ":" + std::to_string(local ? f.lport : f.rport);
}
}  // namespace

std::vector<Conn*> Daemon::users_of(uint8_t mech) const {
  std::vector<Conn*> v;
  for (auto& c : by_slot_)
    if (c && !c->retired && c->mech_id == mech) v.push_back(c.get());
  return v;
}

// The kernel kept a connection plain because its rule names a mechanism
// not deployed here: deploy it for the connections after it.
void Daemon::on_need_mech(const hk_event& ev) {
  const MechKind* k = find_mechanism(ev.mech);
  if (!k || deployed_.get(k->id) || deployed_.held_back(*k) || !deployed_.retry_due(*k)) return;
  std::string why = "first needed by " + endpoint(ev.app, true) + " - " + endpoint(ev.app, false);
  if (auto s = deployed_.deploy(*k, why); !s) log::error(s.error().message());
}

std::string Daemon::mech_request(const std::string& req) {
  // FILE is the rest of the line (a path may hold spaces); hookerctl sends
  // it absolute.
  constexpr std::string_view kObject = " --object ";
  size_t at = req.find(kObject);
  std::string object = at == std::string::npos ? "" : req.substr(at + kObject.size());
  std::istringstream in(req.substr(0, at));
  std::vector<std::string> w;
  for (std::string x; in >> x;) w.push_back(x);
  if (at != std::string::npos && (w.size() != 2 || w[0] != "deploy" || object.empty()))
    return json(refused("malformed request '" + req + "': --object FILE goes with deploy NAME"))
               .dump(2) + "\n";
  auto users = [this](uint8_t id) { return users_of(id).size(); };
  json out;
  const MechKind* k = w.size() >= 2 ? find_mechanism(w[1]) : nullptr;
  bool force = w.size() == 3 && w[2] == "--force";
  if (w.size() == 1 && w[0] == "mechanisms") {
    out = {{"mechanisms", deployed_.json(users)}};
  } else if (w.size() >= 2 && !k && (w[0] == "deploy" || w[0] == "undeploy")) {
    out = refused(w[0] + " " + w[1] + ": unknown mechanism: use " + known_list());
  } else if (!object.empty() && !k->takes_objects) {
    out = refused("deploy " + w[1] + " --object " + object + ": " + w[1] +
                  " takes no BPF object (tcp-cc does)");
  } else if (!object.empty()) {
    auto before = deployed_.json(users);
    if (auto s = deployed_.deploy(*k, "hookerctl deploy --object " + object, object); !s) {
      out = refused(s.error().message());
    } else {
      // What the object registered: the lines it added to `loaded`.
      json added = json::array(), was;
      for (auto& m : before)
        if (m["name"] == k->name) was = m["loaded"];
      for (auto& m : deployed_.json(users))
        if (m["name"] == k->name)
          for (auto& l : m["loaded"])
            if (std::find(was.begin(), was.end(), l) == was.end()) added.push_back(l);
      out = {{"deployed", k->name}, {"object", object}, {"added", added},
             {"mechanisms", deployed_.json(users)}};
    }
  } else if (w.size() == 2 && w[0] == "deploy" && deployed_.get(k->id)) {
    out = refused("deploy " + w[1] + ": already deployed (hookerctl mechanisms shows it)");
  } else if (w.size() == 2 && w[0] == "deploy") {
    if (auto s = deployed_.deploy(*k, "hookerctl deploy"); !s)
      out = refused(s.error().message());
    else
      out = {{"deployed", k->name}, {"mechanisms", deployed_.json(users)}};
  } else if (w[0] == "undeploy" && (w.size() == 2 || force)) {
    auto live = users_of(k->id);
    if (!live.empty() && !force) {
      std::string list;
      for (size_t i = 0; i < live.size() && i < 5; i++)
        list += (i ? ", " : "") + endpoint(live[i]->app, true) + " - " +
                endpoint(live[i]->app, false);
      if (live.size() > 5) list += ", ...";
      out = refused("undeploy " + w[1] + ": " + std::to_string(live.size()) +
                    " connection(s) use it (" + list + "): undeploy " + w[1] +
                    " --force resets them");
    } else {
      // Each peer is told and both applications get ECONNRESET; then the
      // mechanism goes (its sockets at the end of this loop turn).
      for (Conn* c : live) c->mech->reset("mechanism " + w[1] + " undeployed");
      deployed_.undeploy(*k);
      out = {{"undeployed", k->name},
             {"connections_reset", live.size()},
             {"mechanisms", deployed_.json(users)}};
    }
  } else {
    out = refused("malformed request '" + req +
                  "': use mechanisms, deploy NAME [--object FILE] or undeploy NAME [--force]");
  }
  return out.dump(2) + "\n";
}

}  // namespace hooker
