#include "mech/tcp_cc/cc_switch.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "bpf/fd.h"
#include "cc_switch.skel.h"
#include "core/abi.h"

namespace hooker {

namespace {
struct Skel {
  cc_switch_bpf* s = cc_switch_bpf__open();
  ~Skel() { if (s) cc_switch_bpf__destroy(s); }
};

// One path per network namespace with a process in it, or named by
// `ip netns`: hookerd's own first.
std::vector<std::string> net_namespaces() {
  std::vector<std::string> paths;
  std::set<ino_t> seen;
  auto add = [&](const std::string& p) {
    struct stat st;
    if (stat(p.c_str(), &st) == 0 && seen.insert(st.st_ino).second) paths.push_back(p);
  };
  add("/proc/self/ns/net");
  std::error_code ec;
  for (auto& d : std::filesystem::directory_iterator("/proc", ec))
    if (std::isdigit(static_cast<unsigned char>(d.path().filename().string()[0])))
      add(d.path().string() + "/ns/net");
  for (auto& d : std::filesystem::directory_iterator("/run/netns", ec)) add(d.path().string());
  return paths;
}

std::string netns_default() {
  std::ifstream f("/proc/sys/net/ipv4/tcp_congestion_control");
  std::string n;
  f >> n;
  return n;
}
}  // namespace

Result<Switched> switch_off(const std::vector<std::string>& names) {
  Switched out;
  out.to = netns_default();
  if (out.to.empty() || std::find(names.begin(), names.end(), out.to) != names.end())
    out.to = "reno";  // always built in
  Skel k;
  if (!k.s) return sys_error("open the congestion-control switch (BPF iterator)");
  if (cc_switch_bpf__load(k.s)) return sys_error("load the congestion-control switch (BPF iterator)");
  std::strncpy(k.s->bss->fallback, out.to.c_str(), HK_CC_NAME_MAX - 1);
  for (auto& n : names) {
    char key[HK_CC_NAME_MAX] = {};
    std::strncpy(key, n.c_str(), HK_CC_NAME_MAX - 1);
    __u8 one = 1;
    if (bpf_map_update_elem(bpf_map__fd(k.s->maps.leaving), key, &one, BPF_ANY))
      return sys_error("name " + n + " to the congestion-control switch");
  }
  bpf_link* link = bpf_program__attach_iter(k.s->progs.hk_cc_switch, nullptr);
  if (!link) return sys_error("attach the congestion-control switch (TCP iterator)");
  struct Link {
    bpf_link* l;
    ~Link() { bpf_link__destroy(l); }
  } owned{link};
  // A TCP iterator walks the sockets of the namespace it is created in, and
  // the algorithm is the kernel's, for every namespace: one run in each.
  for (auto& ns : net_namespaces()) {
    int err = 0;
    std::thread t([&] {
      Fd nsfd(open(ns.c_str(), O_RDONLY | O_CLOEXEC));
      if (!nsfd.valid() || setns(nsfd.get(), CLONE_NEWNET) != 0) {
        err = errno;
        return;
      }
      Fd it(bpf_iter_create(bpf_link__fd(link)));
      if (!it.valid()) {
        err = errno;
        return;
      }
      char buf[256];
      while (read(it.get(), buf, sizeof(buf)) > 0) {
      }
    });
    t.join();
    if (err && err != ENOENT && err != ESRCH) out.namespaces_failed++;  // not: gone meanwhile
  }
  out.sockets = k.s->bss->switched;
  out.failed = k.s->bss->failed;
  return out;
}

}  // namespace hooker
