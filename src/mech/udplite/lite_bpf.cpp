#include "mech/udplite/lite_bpf.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <endian.h>
#include <net/if.h>

#include <linux/types.h>

extern "C" {
#include "udplite_abi.h"
}
#include "udplite.skel.h"
#include "bpf/uapi_new.h"

namespace hooker {

namespace {
// Status counter names, by enum hk_lite_counter.
constexpr const char* kNames[HK_LITE__MAX] = {
    "ebpf_out",                   "ebpf_in",
    "ebpf_drop_out_short",        "ebpf_drop_out_fragment",
    "ebpf_drop_out_gso",          "ebpf_drop_in_short",
    "ebpf_drop_in_fragment",      "ebpf_drop_in_bad_coverage",
    "ebpf_drop_in_low_coverage",  "ebpf_drop_in_too_long",
    "ebpf_drop_in_bad_checksum",
};

Error bpf_error(const std::string& what, int ret) {
  return Error{what, ret < 0 ? -ret : errno};
}
}  // namespace

Result<std::unique_ptr<LiteBpf>> LiteBpf::attach(uint16_t port, uint16_t inner_port,
                                                 const std::vector<std::string>& ifaces) {
  std::unique_ptr<LiteBpf> b(new LiteBpf());
  b->skel_ = udplite_bpf__open();
  if (!b->skel_) return sys_error("open the udplite BPF object");
  b->skel_->rodata->hk_port = port;
  b->skel_->rodata->hk_inner_port = inner_port;
  if (int r = udplite_bpf__load(b->skel_))
    return bpf_error("load the udplite BPF object (tcx egress+ingress) into the kernel", r);
  for (const auto& name : ifaces)
    if (auto s = b->link(name); !s) return s.error();  // ~LiteBpf undoes the others
  return b;
}

Status LiteBpf::link(const std::string& iface) {
  unsigned idx = if_nametoindex(iface.c_str());
  if (!idx) return sys_error("no interface '" + iface + "' in this network namespace");
  // Links, not tc filters: appended after the programs there (hookerd's
  // ingress among them), detached when the fd closes, even on a crash.
  struct { bpf_program* prog; bpf_attach_type at; const char* what; } hooks[] = {
      {skel_->progs.hk_lite_egress, kBpfTcxEgress, "egress"},
      {skel_->progs.hk_lite_ingress, kBpfTcxIngress, "ingress"},
  };
  for (auto& h : hooks) {
    LIBBPF_OPTS(bpf_link_create_opts, lo);
    int fd = bpf_link_create(bpf_program__fd(h.prog), static_cast<int>(idx), h.at, &lo);
    if (fd < 0)
      return sys_error("attach udplite's tcx " + std::string(h.what) + " program to " + iface +
                       " (tcx needs Linux 6.6; bpftool net show dev " + iface + ")");
    links_.emplace_back(fd);
  }
  ifaces_.push_back(iface);
  return ok();
}

LiteBpf::~LiteBpf() {
  links_.clear();  // detach first: no packet runs a program being freed
  if (skel_) udplite_bpf__destroy(skel_);
}

// Keyed as the egress program reads the token: from the frame, network order.
Status LiteBpf::cover(uint64_t peer_token, uint16_t coverage) {
  uint64_t key = htobe64(peer_token);
  if (int r = bpf_map_update_elem(bpf_map__fd(skel_->maps.lite_coverage), &key, &coverage,
                                  BPF_ANY))
    return bpf_error("set a connection's checksum coverage to " + std::to_string(coverage) +
                         " (" + std::to_string(HK_LITE_COVERED_MAX) +
                         " connections with a coverage of their own at most)",
                     r);
  return ok();
}

void LiteBpf::uncover(uint64_t peer_token) {
  uint64_t key = htobe64(peer_token);
  bpf_map_delete_elem(bpf_map__fd(skel_->maps.lite_coverage), &key);
}

std::vector<std::pair<const char*, uint64_t>> LiteBpf::counters() const {
  int ncpu = libbpf_num_possible_cpus();
  std::vector<uint64_t> per(ncpu > 0 ? ncpu : 1);
  std::vector<std::pair<const char*, uint64_t>> out;
  int fd = bpf_map__fd(skel_->maps.lite_counters);
  for (__u32 i = 0; i < HK_LITE__MAX; i++) {
    uint64_t sum = 0;
    if (bpf_map_lookup_elem(fd, &i, per.data()) == 0)
      for (auto v : per) sum += v;
    out.emplace_back(kNames[i], sum);
  }
  return out;
}

std::string LiteBpf::describe() const {
  std::string s = "BPF object udplite.bpf.o: tcx egress+ingress on ";
  for (size_t i = 0; i < ifaces_.size(); i++) s += (i ? ", " : "") + ifaces_[i];
  return s;
}

}  // namespace hooker
