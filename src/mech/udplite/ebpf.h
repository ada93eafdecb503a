// udplite made by BPF programs instead of the kernel's UDP-Lite (ebpf.cpp
// says how): hookerd --udplite-impl ebpf, or auto where the kernel has none.
#pragma once

#include <memory>

#include "core/result.h"
#include "mech/mechanism.h"

namespace hooker {

Result<std::unique_ptr<Mechanism>> udplite_ebpf_open(MechHost& host, const MechConfig& cfg);

}  // namespace hooker
