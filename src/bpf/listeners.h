// Listeners opened before their port entered the policy (or before hookerd
// started) made to negotiate like new ones (bpf/listeners.bpf.c). Loaded on
// first use: it costs a parse of the kernel's BTF (about 10 ms), which a
// start without such listeners does not pay.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/result.h"

struct listeners_bpf;
struct bpf_link;

namespace hooker {

class Listeners {
 public:
  // cgroup: the served cgroup v2 directory; only its listeners change.
  // listener_cgs_fd: the redirector's map of listeners' cgroups
  // (hk_listener_cg), filled for the listeners it follows.
  static Result<std::unique_ptr<Listeners>> load(const std::string& cgroup, int listener_cgs_fd);
  ~Listeners();
  Listeners(const Listeners&) = delete;
  Listeners& operator=(const Listeners&) = delete;

  struct Outcome {
    size_t followed = 0;  // listeners that negotiate from now on
    std::string refused;  // why others do not, empty if none
  };
  // One pass over this network namespace's TCP sockets.
  Result<Outcome> follow(const std::vector<uint16_t>& ports);

 private:
  Listeners() = default;
  listeners_bpf* skel_ = nullptr;
  bpf_link* link_ = nullptr;
};

// Whether this network namespace has a TCP listener on one of the ports
// (sock_diag): the start-up check that decides whether to load
// the iterator at all.
bool listening_on_any(const std::vector<uint16_t>& ports);

}  // namespace hooker
