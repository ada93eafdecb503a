// The mechanisms hookerd carries connections with, deployed while it runs:
// at start (--eager), when a connection first needs one (the kernel's
// HK_EV_NEED_MECH: that connection stays plain TCP, the next ones move), or
// by `hookerctl deploy`; and undeployed by `hookerctl undeploy`. Every
// deployment is timed and remembered for `hookerctl mechanisms`.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "bpf/kernel.h"
#include "core/result.h"
#include "mech/mechanism.h"

namespace hooker {

class Deployments {
 public:
  // One entry per compiled-in mechanism, none deployed.
  Deployments(MechHost& host, MechConfig cfg);
  const MechConfig& config() const { return cfg_; }

  // Where deployed mechanisms' sockets are polled (under tag(i), i an index
  // for polled()) and which kernel hears what is deployed. Mechanisms
  // deployed before are registered now.
  Status connect(int epoll_fd, std::function<uint64_t(uint32_t)> tag, Kernel& kernel);

  Mechanism* get(uint8_t id) const;  // null: not deployed
  // The socket polled under index i and its mechanism (null: undeployed).
  std::pair<int, Mechanism*> polled(uint32_t i) const;
  // Polls a mechanism's socket for room too (on_writable), or no more.
  void want_writable(int fd, bool on) const;
  template <class F> void for_each(F f) const {
    for (auto& d : all_)
      if (d.m) f(*d.kind, *d.m);
  }

  // Opens its sockets (and whatever else it loads), polls them, then tells
  // the kernel: from then on handshakes may name it. With `object`, a
  // user's BPF object goes into it too (MechKind::takes_objects), deployed
  // first if it was not; if the object fails, nothing changes.
  Status deploy(const MechKind& k, std::string trigger, const std::string& object = "");
  // Tells the kernel first (no new connection names it), then closes it at
  // the end of the loop turn (reap): its connections must have been reset.
  // Until deploy() it is held back: a connection needing it stays TCP.
  void undeploy(const MechKind& k);
  bool held_back(const MechKind& k) const { return entry(k).held_back; }
  // A deployment that failed is not retried on every connection.
  bool retry_due(const MechKind& k) const;
  // Whether it would open on this host (its port free, its protocol in the
  // kernel), without keeping it: a bad port is said at start.
  Status check(const MechKind& k);
  void reap();  // frees the undeployed

  // `hookerctl mechanisms`: one object per compiled-in mechanism.
  // `users(id)`: live connections on it.
  nlohmann::json json(const std::function<size_t(uint8_t)>& users) const;

 private:
  struct Entry {
    const MechKind* kind = nullptr;
    std::unique_ptr<Mechanism> m;  // null: not deployed
    bool held_back = false;
    uint64_t deploys = 0;
    std::string trigger, at, error;  // the last deployment's (or failure's)
    double load_ms = 0;               // open to polled and told to the kernel
    std::chrono::steady_clock::time_point failed_at{};
  };
  Entry& entry(const MechKind& k);
  const Entry& entry(const MechKind& k) const;
  Status poll(Entry& e);
  void unpoll(Mechanism* m);  // its sockets' tags become {-1, null}
  void tell_kernel();

  MechHost& host_;
  MechConfig cfg_;
  std::vector<Entry> all_;
  int epoll_ = -1;
  std::function<uint64_t(uint32_t)> tag_;
  Kernel* kernel_ = nullptr;
  bool announce_ = false;  // log each deployment (after start)
  // The polled sockets by the index in their epoll tag; an undeployed
  // mechanism's become {-1, null} so no tag is ever reused.
  std::vector<std::pair<int, Mechanism*>> fds_;
  std::vector<std::unique_ptr<Mechanism>> retired_;
};

}  // namespace hooker
