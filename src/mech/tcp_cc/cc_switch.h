// Live sockets off congestion controls that are going away (bpf/cc_switch.bpf.c).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/result.h"

namespace hooker {

struct Switched {
  uint32_t sockets = 0, failed = 0;
  uint32_t namespaces_failed = 0;  // network namespaces it could not enter
  std::string to;  // the fallback for a namespace whose default was leaving too
};

// Every TCP socket, in every network namespace, that runs one of `names`
// goes on with its namespace's default congestion control (or, if that is
// one of them too, hookerd's namespace's default, or reno). Run after they were unregistered: then no socket can
// pick them again, and once none holds them the kernel frees them.
Result<Switched> switch_off(const std::vector<std::string>& names);

}  // namespace hooker
