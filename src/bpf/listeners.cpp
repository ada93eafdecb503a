#include "bpf/listeners.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "bpf/fd.h"
#include "listeners.skel.h"

namespace hooker {

namespace {
struct Followed {  // struct hk_followed in bpf/listeners.bpf.c
  uint16_t port;
  int16_t err;
};
}  // namespace

Result<std::unique_ptr<Listeners>> Listeners::load(const std::string& cgroup,
                                                   int listener_cgs_fd) {
  // A cgroup v2 directory's inode number is its kernfs id.
  struct stat st;
  if (stat(cgroup.c_str(), &st) < 0) return sys_error("stat cgroup " + cgroup);
  std::unique_ptr<Listeners> l(new Listeners());
  l->skel_ = listeners_bpf__open();
  if (!l->skel_) return sys_error("open the listener-following BPF object");
  l->skel_->rodata->hk_cgroup_id = st.st_ino;
  // The listeners' cgroups go where the sock_ops program reads them.
  if (int r = bpf_map__reuse_fd(l->skel_->maps.listener_cgs, listener_cgs_fd))
    return Error{"share the listeners' cgroups with the listener-following iterator", -r};
  if (int r = listeners_bpf__load(l->skel_))
    return Error{"load the listener-following TCP iterator into the kernel", -r};
  l->link_ = bpf_program__attach_iter(l->skel_->progs.hk_follow_listeners, nullptr);
  if (!l->link_) return sys_error("attach the listener-following TCP iterator");
  return l;
}

Listeners::~Listeners() {
  if (link_) bpf_link__destroy(link_);
  if (skel_) listeners_bpf__destroy(skel_);
}

Result<Listeners::Outcome> Listeners::follow(const std::vector<uint16_t>& ports) {
  int map = bpf_map__fd(skel_->maps.follow);
  __u8 one = 1;
  for (uint16_t p : ports)
    if (bpf_map_update_elem(map, &p, &one, BPF_ANY)) return sys_error("name a port to follow");
  Fd it(bpf_iter_create(bpf_link__fd(link_)));
  std::string out;
  if (it.valid()) {
    char buf[4096];
    ssize_t n;
    while ((n = read(it.get(), buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
    if (n < 0) it = Fd();
  }
  int saved = errno;
  for (uint16_t p : ports) bpf_map_delete_elem(map, &p);
  if (!it.valid()) return Error{"run the listener-following TCP iterator", saved};
  Outcome o;
  for (size_t off = 0; off + sizeof(Followed) <= out.size(); off += sizeof(Followed)) {
    Followed f;
    std::memcpy(&f, out.data() + off, sizeof(f));
    if (f.err == 0) {
      o.followed++;
      continue;
    }
    if (o.refused.empty())
      o.refused = "a listener on port " + std::to_string(f.port) +
                  " opened before its rule will not negotiate (the kernel refused: " +
                  std::strerror(-f.err) + "; Linux 6.13 or later allows it): restart it";
  }
  return o;
}

bool listening_on_any(const std::vector<uint16_t>& ports) {
  // sock_diag, not /proc/net/tcp: reading those walks every TCP socket
  // hash bucket of the machine, whatever the namespace (7 ms of start-up
  // here); a dump of listeners walks the listening hash only. When the
  // kernel cannot say, the answer is yes: the caller then looks itself.
  Fd nl(socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!nl.valid()) return true;
  timeval limit{2, 0};  // the kernel answers at once; a hang is never a start
  setsockopt(nl.get(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  for (uint8_t family : {AF_INET, AF_INET6}) {
    struct {
      nlmsghdr h;
      inet_diag_req_v2 r;
    } req{};
    req.h.nlmsg_len = sizeof req;
    req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.r.sdiag_family = family;
    req.r.sdiag_protocol = IPPROTO_TCP;
    req.r.idiag_states = 1u << 10;  // TCP_LISTEN
    if (send(nl.get(), &req, sizeof req, 0) < 0) return true;
    alignas(nlmsghdr) char buf[16384];
    for (bool done = false; !done;) {
      ssize_t n = recv(nl.get(), buf, sizeof buf, 0);
      if (n <= 0) return true;
      auto len = static_cast<unsigned>(n);
      for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_type == NLMSG_ERROR) return true;
        if (h->nlmsg_type == NLMSG_DONE) {
          done = true;
          break;
        }
        auto* m = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
        if (std::find(ports.begin(), ports.end(), ntohs(m->id.idiag_sport)) != ports.end())
          return true;
      }
    }
  }
  return false;
}

}  // namespace hooker
