// hookerd: moves the payload of matching TCP connections onto UDP.
#include <sys/resource.h>

#include <cstdio>

#include "core/log.h"
#include "daemon/daemon.h"
#include "daemon/notify.h"
#include "daemon/options.h"

// Each moved connection holds two slot sockets: the soft limit on open files
// (often 1024) would stop the slot pool at about 500 connections, and every
// connection past that would stay plain TCP. The limit is raised to the hard
// one; the default --max-conns is fitted under it, an explicit one that does
// not fit is refused.
static hooker::Status fit_open_files(hooker::Options& o) {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return hooker::sys_error("getrlimit(RLIMIT_NOFILE)");
  if (r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &r) != 0) getrlimit(RLIMIT_NOFILE, &r);
  }
  constexpr rlim_t kOtherFds = 256;  // epoll, BPF objects, sockets of its own
  if (r.rlim_cur == RLIM_INFINITY || r.rlim_cur >= 2 * rlim_t{o.max_conns} + kOtherFds)
    return hooker::ok();
  rlim_t fit = r.rlim_cur > kOtherFds + 32 ? (r.rlim_cur - kOtherFds) / 2 : 16;
  if (o.max_conns_given)
    return hooker::Error{"--max-conns " + std::to_string(o.max_conns) + " needs " +
                             std::to_string(2 * o.max_conns + kOtherFds) +
                             " open files, the limit is " + std::to_string(r.rlim_cur) +
                             ": raise it (ulimit -n) or give --max-conns " + std::to_string(fit),
                         0};
  o.max_conns = static_cast<uint32_t>(fit);
  return hooker::ok();
}

int main(int argc, char** argv) {
  namespace log = hooker::log;
  auto opt = hooker::parse_options(argc, argv);
  if (!opt) {
    if (opt.error().what.empty()) return 0;  // --help
    log::error(opt.error().message());
    return 2;
  }
  log::set_level(opt->log_level);
  if (auto s = fit_open_files(*opt); !s) {
    log::error(s.error().message());
    return 2;
  }
  auto d = hooker::Daemon::start(*opt);
  if (!d) {
    // Everything attached so far was detached by the destructors.
    log::error(d.error().message());
    return 1;
  }
  printf("hookerd: ready\n");
  fflush(stdout);
  // systemd (Type=notify) starts what needs hookerd only now, when every
  // program is attached. A manager that cannot be told is said, not fatal.
  if (auto n = hooker::notify_service_manager("READY=1"); !n) log::warn(n.error().message());
  if (log::enabled(log::Level::kDebug)) {
    char buf[64];
    snprintf(buf, sizeof(buf), "start to ready %.2f ms:", (*d)->ready_ms);
    std::string line = buf;
    for (auto& [name, ms] : (*d)->startup_ms) {
      snprintf(buf, sizeof(buf), " %s %.2f", name.c_str(), ms);
      line += buf;
    }
    log::debug(line);
  }
  auto s = (*d)->run();
  // Told before the teardown (detaching, letting held FINs through) starts.
  if (auto n = hooker::notify_service_manager("STOPPING=1"); !n) log::warn(n.error().message());
  if (!s) {
    log::error(s.error().message());
    return 1;
  }
  return 0;
}
