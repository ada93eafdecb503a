#include "mech/tcp_cc/tcp_cc.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "mech/mechanism.h"
#include "mech/tcp_cc/cc_object.h"
#include "mech/tcp_cc/cc_switch.h"
#include "vegas.skel.h"

namespace hooker {

const std::vector<std::string>& tcp_cc_builtin() {
  static const std::vector<std::string> names = {"hk_vegas"};
  return names;
}

Status tcp_cc_known(const std::string& name) {
  auto& mine = tcp_cc_builtin();
  auto reg = registered_ccs();
  if (std::find(mine.begin(), mine.end(), name) != mine.end() ||
      std::find(reg.begin(), reg.end(), name) != reg.end())
    return ok();
  std::string known;
  for (auto& n : mine) known += (known.empty() ? "" : ", ") + n + " (built in)";
  for (auto& n : reg)
    if (std::find(mine.begin(), mine.end(), n) == mine.end()) known += ", " + n;
  return Error{"unknown congestion control '" + name + "': use " + known +
                   ", or register yours first: hookerctl deploy tcp-cc --object FILE.bpf.o",
               0};
}

namespace {

class TcpCc final : public Mechanism {
 public:
  explicit TcpCc(MechHost& host) : host_(host) {}
  ~TcpCc() override {
    // Unregistered first (no new connection can pick them), then the live
    // connections that run them go on with the default: the kernel would
    // keep them (and the algorithm's programs) to the end otherwise.
    std::vector<std::string> ours;
    for (auto& o : objects_)
      for (auto& a : o->algos())
        if (a.ours) ours.push_back(a.name);
    while (!objects_.empty()) objects_.pop_back();
    if (ours.empty()) return;
    auto s = switch_off(ours);
    if (!s)
      host_.log("tcp-cc: connections using " + ours.front() + "... keep it until they close: " +
                    s.error().message(),
                log::Level::kWarn);
    else if (s->sockets || s->failed || s->namespaces_failed)
      host_.log("tcp-cc: " + std::to_string(s->sockets) +
                " connection(s) went on with their namespace's default congestion control" +
                (s->failed ? "; " + std::to_string(s->failed) + " refused the switch" : "") +
                (s->namespaces_failed
                     ? "; " + std::to_string(s->namespaces_failed) + " namespace(s) not entered"
                     : ""));
  }

  Status builtins() {
    size_t size = 0;
    const void* elf = vegas_bpf__elf_bytes(&size);
    auto o = CcObject::load(elf, size, "built in", /*adopt=*/true);
    if (!o) return o.error();
    objects_.push_back(o.take());
    return ok();
  }

  Status load_object(const std::string& path) override {
    auto o = CcObject::load_file(path);
    if (!o) return o.error();
    objects_.push_back(o.take());
    return ok();
  }

  std::vector<int> fds() const override { return {}; }
  void on_readable(int) override {}
  void on_writable(int) override {}
  void flush() override {}
  void reap() override {}
  void housekeeping() override {}
  // No handshake names tcp-cc (its rules accept no mechanism): never called.
  std::unique_ptr<MechConn> open(const PeerInfo&, AppPort&) override { return nullptr; }
  void refuse(const PeerInfo&) override {}

  void status(nlohmann::json& out) const override {
    out["counters"] = nlohmann::json::object();
    auto algos = nlohmann::json::array();
    for (auto& o : objects_)
      for (auto& a : o->algos())
        algos.push_back({{"name", a.name}, {"from", o->origin()}, {"registered_here", a.ours}});
    out["algorithms"] = algos;
  }

  std::vector<std::string> loaded() const override {
    std::vector<std::string> v;
    for (auto& o : objects_)
      for (auto& a : o->algos())
        v.push_back(a.name + " (BPF struct_ops, " +
                    (o->origin() == "built in" ? "built in" : "from " + o->origin()) +
                    (a.ours ? ")" : "; registered already on this kernel: used as it is)"));
    return v;
  }

 private:
  MechHost& host_;
  std::vector<std::unique_ptr<CcObject>> objects_;
};

}  // namespace

Result<std::unique_ptr<Mechanism>> tcp_cc_open(MechHost& host, const MechConfig&) {
  auto m = std::make_unique<TcpCc>(host);
  if (auto s = m->builtins(); !s) return s.error();
  return std::unique_ptr<Mechanism>(std::move(m));
}

}  // namespace hooker
