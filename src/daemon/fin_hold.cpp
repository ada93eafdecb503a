#include "daemon/fin_hold.h"
#include "core/log.h"

// glibc's network headers first: they tell the kernel's uapi headers that
// netfilter pulls in not to define the same structs again.
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>
#include <netinet/tcp.h>
#include <fcntl.h>
extern "C" {
#include <libnetfilter_queue/libnetfilter_queue.h>
}
#include <linux/netfilter.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>

#include "core/flow.h"
#include "daemon/tuning.h"

extern char** environ;

namespace hooker {

Status run_command(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) < 0) return sys_error("pipe for " + argv[0]);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0].c_str(), &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(pipefd[1]);
  if (rc != 0) {
    close(pipefd[0]);
    return Error{"run " + argv[0] + " (install iptables: make deps)", rc};
  }
  std::string err;
  char buf[512];
  ssize_t n;
  while ((n = read(pipefd[0], buf, sizeof(buf))) > 0) err.append(buf, static_cast<size_t>(n));
  close(pipefd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return ok();
  std::string cmd;
  for (auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
  while (!err.empty() && err.back() == '\n') err.pop_back();
  return Error{cmd + " failed: " + err, 0};
}

Result<std::unique_ptr<FinHold>> FinHold::open(uint16_t queue_num, const Policy& policy,
                                               Decide decide) {
  std::unique_ptr<FinHold> f(new FinHold());
  f->queue_num_ = queue_num;
  f->decide_ = std::move(decide);
  f->h_ = nfq_open();
  if (!f->h_) return sys_error("open netfilter queue socket");
  f->qh_ = nfq_create_queue(f->h_, queue_num, &FinHold::on_packet, f.get());
  if (!f->qh_)
    return sys_error("create NFQUEUE " + std::to_string(queue_num) +
                     " (another hookerd on this UDP port in this namespace?)");
  // Headers are enough to find the connection.
  if (nfq_set_mode(f->qh_, NFQNL_COPY_PACKET, 128) < 0) return sys_error("set NFQUEUE copy mode");
  // Never fail open: a FIN let in because the queue or this socket was
  // full would overtake its connection's bytes (the reader gets EOF and
  // they are lost: it happened with 100 connections at once under a slow
  // hookerd). Dropped instead, a FIN is sent again by the peer's TCP; an
  // RST is lost as a network may lose one (a moved connection then ends by
  // its mechanism's silence checks, loudly). What waits for hookerd is
  // bounded by the socket's buffer, made large.
  nfq_set_queue_maxlen(f->qh_, kFinQueueMaxlen);
  int buf = kFinQueueBuffer;
  if (setsockopt(nfq_fd(f->h_), SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf)) < 0)
    return sys_error("size the netfilter queue socket's buffer (SO_RCVBUFFORCE)");
  if (auto s = f->add_ports(policy.ports()); !s) return s.error();
  return f;
}

bool FinHold::covers(uint16_t port) const {
  for (auto& g : groups_)
    if (std::find(g.ports.begin(), g.ports.end(), port) != g.ports.end()) return true;
  return false;
}

void FinHold::keep_until_idle(uint16_t port) {
  if (covers(port) && std::find(idling_.begin(), idling_.end(), port) == idling_.end())
    idling_.push_back(port);
}

void FinHold::sweep(const std::function<bool(uint16_t port)>& in_use) {
  for (size_t i = 0; i < idling_.size();) {
    uint16_t p = idling_[i];
    if (in_use(p)) {
      i++;
      continue;
    }
    idling_.erase(idling_.begin() + static_cast<long>(i));
    if (auto s = remove_port(p); !s)
      log::error(s.error().message() + " (the rule stays until exit)");
  }
}

Status FinHold::add_ports(const std::vector<uint16_t>& wanted) {
  std::vector<uint16_t> ports;
  for (uint16_t p : wanted) {
    if (auto it = std::find(idling_.begin(), idling_.end(), p); it != idling_.end()) {
      idling_.erase(it);  // its rule is still there
      continue;
    }
    if (covers(p)) return Error{"FINs on port " + std::to_string(p) + " are already held", 0};
    ports.push_back(p);
  }
  // multiport takes at most 15 ports per rule.
  for (size_t i = 0; i < ports.size(); i += 15) {
    auto g = install({ports.begin() + static_cast<long>(i),
                      ports.begin() + static_cast<long>(std::min(ports.size(), i + 15))});
    if (!g) return g.error();
    groups_.push_back(g.take());
  }
  return ok();
}

Status FinHold::remove_port(uint16_t port) {
  auto it = std::find_if(groups_.begin(), groups_.end(), [port](const Group& g) {
    return std::find(g.ports.begin(), g.ports.end(), port) != g.ports.end();
  });
  if (it == groups_.end())
    return Error{"FINs on port " + std::to_string(port) + " are not held", 0};
  std::vector<uint16_t> rest;
  for (uint16_t p : it->ports)
    if (p != port) rest.push_back(p);
  Group old = std::move(*it);
  groups_.erase(it);
  if (!rest.empty()) {
    auto g = install(rest);
    if (!g) {
      groups_.push_back(std::move(old));  // still installed: nothing changed
      return g.error();
    }
    groups_.push_back(g.take());
  }
  uninstall(old);
  return ok();
}

void FinHold::uninstall(const Group& g) {
  for (auto& r : g.del) (void)run_command(r);
}

Status FinHold::hold_ranges(const std::vector<std::pair<uint16_t, uint16_t>>& ranges) {
  for (auto [lo, hi] : ranges) {
    if (std::find(ranges_.begin(), ranges_.end(), std::pair{lo, hi}) != ranges_.end()) continue;
    // multiport's FIRST:LAST; its ports list stays empty, so policy
    // del never takes it.
    auto g = install({}, lo == hi ? std::to_string(lo) : std::to_string(lo) + ":" + std::to_string(hi));
    if (!g) return g.error();
    groups_.push_back(g.take());
    ranges_.emplace_back(lo, hi);
  }
  return ok();
}

Result<FinHold::Group> FinHold::install(const std::vector<uint16_t>& ports, std::string list) {
  Group g{ports, {}};
  for (uint16_t p : ports) list += (list.empty() ? "" : ",") + std::to_string(p);
  // FINs, and RSTs from the wire: not the RSTs hookerd gives its own
  // applications (Injector, through loopback), which must land at once,
  // before the application's next send finds its connection gone.
  const std::vector<std::vector<std::string>> matches = {
      {"-p", "tcp", "--tcp-flags", "FIN,RST", "FIN"},
      {"!", "-i", "lo", "-p", "tcp", "--tcp-flags", "RST", "RST"}};
  for (const char* tool : {"iptables", "ip6tables"})
    for (const auto& match : matches) {
      std::vector<std::string> spec = {"INPUT"};
      spec.insert(spec.end(), match.begin(), match.end());
      spec.insert(spec.end(), {"-m", "multiport", "--ports", list, "-m", "comment", "--comment",
                               "hooker fin hold", "-j", "NFQUEUE", "--queue-num",
                               std::to_string(queue_num_), "--queue-bypass"});
      std::vector<std::string> add = {tool, "-w", "-I"};
      add.insert(add.end(), spec.begin(), spec.end());
      std::vector<std::string> del = {tool, "-w", "-D"};
      del.insert(del.end(), spec.begin(), spec.end());
      // A hookerd killed with SIGKILL left its rules: remove them first, so
      // they do not pile up.
      for (int i = 0; i < 8 && run_command(del); i++) {
      }
      if (auto s = run_command(add); !s) {
        uninstall(g);  // the rules added already
        return s.error();
      }
      g.del.push_back(std::move(del));
    }
  return g;
}

FinHold::~FinHold() {
  for (auto& g : groups_) uninstall(g);
  // Packets queued and not read yet are dropped with the queue: an RST
  // would be lost for good. None comes in now; let those in.
  decide_ = [](const hk_flow&, uint32_t, bool) { return true; };
  if (h_) (void)on_readable();
  if (qh_) nfq_destroy_queue(qh_);  // drops what is still held: Daemon released its FINs
  if (h_) nfq_close(h_);
}

int FinHold::fd() const { return nfq_fd(h_); }

static bool tuple_of(const unsigned char* p, int len, hk_flow& f, bool& rst) {
  f = {};
  if (len < 1) return false;
  const tcphdr* th;
  if ((p[0] >> 4) == 4) {
    if (len < static_cast<int>(sizeof(iphdr))) return false;
    auto* ip = reinterpret_cast<const iphdr*>(p);
    int hl = ip->ihl * 4;
    if (ip->protocol != IPPROTO_TCP || len < hl + static_cast<int>(sizeof(tcphdr))) return false;
    f.family = AF_INET;
    f.laddr[0] = ip->daddr;
    f.raddr[0] = ip->saddr;
    th = reinterpret_cast<const tcphdr*>(p + hl);
  } else {
    if (len < static_cast<int>(sizeof(ip6_hdr) + sizeof(tcphdr))) return false;
    auto* ip6 = reinterpret_cast<const ip6_hdr*>(p);
    if (ip6->ip6_nxt != IPPROTO_TCP) return false;
    f.family = AF_INET6;
    std::memcpy(f.laddr, &ip6->ip6_dst, 16);
    std::memcpy(f.raddr, &ip6->ip6_src, 16);
    th = reinterpret_cast<const tcphdr*>(p + sizeof(ip6_hdr));
  }
  f.lport = ntohs(th->dest);
  f.rport = ntohs(th->source);
  rst = th->rst;
  return true;
}

int FinHold::on_packet(nfq_q_handle* qh, nfgenmsg*, nfq_data* nfa, void* self) {
  auto* me = static_cast<FinHold*>(self);
  auto* ph = nfq_get_msg_packet_hdr(nfa);
  if (!ph) return 0;
  uint32_t id = ntohl(ph->packet_id);
  unsigned char* data = nullptr;
  int len = nfq_get_payload(nfa, &data);
  me->queued++;
  hk_flow f;
  bool rst = false;
  if (!tuple_of(data, len, f, rst) || me->decide_(f, id, rst))
    return nfq_set_verdict(qh, id, NF_ACCEPT, 0, nullptr);
  me->held++;
  return 0;
}

void FinHold::release(uint32_t id) {
  released++;
  nfq_set_verdict(qh_, id, NF_ACCEPT, 0, nullptr);
}

Status FinHold::on_readable() {
  alignas(8) char buf[4096];
  for (;;) {
    ssize_t n = recv(fd(), buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return ok();
      if (errno == ENOBUFS) {
        // Packets were dropped for want of room: TCP sends those FINs again.
        overflows++;
        continue;
      }
      return sys_error("read the netfilter queue");
    }
    nfq_handle_packet(h_, buf, static_cast<int>(n));
  }
}

}  // namespace hooker
