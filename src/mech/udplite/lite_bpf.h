// The BPF half of udplite's eBPF implementation (bpf/udplite.bpf.c): the
// object loaded, its two programs linked at tcx egress and ingress on each
// interface. Owned here and nowhere else: destroying it closes the links
// (detached at once: tcx links are the attachment) and the object, so
// nothing of it stays in the kernel.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bpf/fd.h"
#include "core/result.h"

struct udplite_bpf;

namespace hooker {

class LiteBpf {
 public:
  // Loads the object for datagrams between UDP `inner_port` (hookerd's
  // socket) and UDP-Lite `port` (on the wire), and links it on `ifaces`.
  static Result<std::unique_ptr<LiteBpf>> attach(uint16_t port, uint16_t inner_port,
                                                 const std::vector<std::string>& ifaces);
  ~LiteBpf();
  LiteBpf(const LiteBpf&) = delete;
  LiteBpf& operator=(const LiteBpf&) = delete;

  // The checksum of DATA datagrams to the peer's `peer_token` covers
  // `coverage` bytes (udplite:cov=N), until uncover().
  Status cover(uint64_t peer_token, uint16_t coverage);
  void uncover(uint64_t peer_token);

  // Its counters summed over the CPUs, by name (ebpf_out, ebpf_in,
  // ebpf_drop_...), in the order of enum hk_lite_counter.
  std::vector<std::pair<const char*, uint64_t>> counters() const;
  // "BPF object udplite.bpf.o: tcx egress+ingress on eth0".
  std::string describe() const;

 private:
  LiteBpf() = default;
  Status link(const std::string& iface);

  udplite_bpf* skel_ = nullptr;
  std::vector<Fd> links_;  // egress and ingress per interface
  std::vector<std::string> ifaces_;
};

}  // namespace hooker
