// hooker-floor-attach: the floor of hookerd's start-up, measured rather than
// guessed (issue 12). Of hookerd's start, the ingress program's tcx link is a
// kernel cost that no smaller program shortens: the kernel waits for an RCU
// grace period when it swaps an interface's program list. This loads an empty
// tc program and links it at IFNAME's ingress, the way hookerd does, and times
// both; what it prints is what any hookerd that links a program at start pays.
//
//   hooker-floor-attach IFNAME
//       prints {"load_ms": L, "tcx_link_ms": T}; the link is gone at exit
//
// Exit 0 when measured, 1 when the kernel refuses (the message says which
// step), 2 on bad arguments.
#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <net/if.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "bpf/fd.h"  // the project's one Fd
#include "bpf/uapi_new.h"

using hooker::Fd;
using hooker::kBpfTcxIngress;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

int fail(const std::string& what) {
  std::fprintf(stderr, "hooker-floor-attach: %s: %s\n", what.c_str(), std::strerror(errno));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "hooker-floor-attach: give one interface\n"
                         "usage: hooker-floor-attach IFNAME\n");
    return 2;
  }
  unsigned ifindex = if_nametoindex(argv[1]);
  if (ifindex == 0) {
    std::fprintf(stderr, "hooker-floor-attach: no interface '%s' here\n"
                         "usage: hooker-floor-attach IFNAME\n", argv[1]);
    return 2;
  }
  // r0 = TCX_NEXT (-1); exit: the packet goes on as if nothing ran.
  const bpf_insn empty[] = {
      {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, -1},
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  auto t0 = Clock::now();
  Fd prog(bpf_prog_load(BPF_PROG_TYPE_SCHED_CLS, "hk_floor", "GPL", empty, 2, nullptr));
  if (!prog.valid()) return fail("load an empty tc program");
  double load_ms = ms_since(t0);
  t0 = Clock::now();
  Fd link(bpf_link_create(prog.get(), static_cast<int>(ifindex), kBpfTcxIngress, nullptr));
  if (!link.valid()) return fail(std::string("link it at ") + argv[1] + "'s tcx ingress");
  double link_ms = ms_since(t0);
  std::printf("{\"load_ms\": %.3f, \"tcx_link_ms\": %.3f}\n", load_ms, link_ms);
  return 0;
}
