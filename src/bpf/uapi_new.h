// Kernel UAPI numbers newer than the headers libbpf 1.1 (Debian 12) builds
// against. The kernel takes the numbers; these name them, once.
#pragma once

#include <linux/bpf.h>

namespace hooker {

constexpr auto kBpfStructOps = static_cast<bpf_attach_type>(44);  // BPF_STRUCT_OPS, 6.4
constexpr auto kBpfTcxIngress = static_cast<bpf_attach_type>(46);  // BPF_TCX_INGRESS, 6.6
constexpr auto kBpfTcxEgress = static_cast<bpf_attach_type>(47);   // BPF_TCX_EGRESS, 6.6
constexpr __u32 kBpfFLink = 1u << 13;                              // BPF_F_LINK, 6.4

}  // namespace hooker
