// hooker-linkemu: the project's stand-in for netem (absent from this kernel).
// Run in the middle network namespace between two hosts; see bench/README.md.
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <random>
#include <thread>

#include "direction.h"
#include "options.h"
#include "port.h"

using namespace linkemu;

namespace {

void print_counters(const Direction& d, bool last) {
  const Counters& c = d.counters();
  std::printf("\"%s\": {\"rx\": %lu, \"tx\": %lu, \"lost\": %lu, \"duplicated\": %lu, "
              "\"reordered\": %lu, \"corrupted\": %lu, \"overflow\": %lu, "
              "\"send_errors\": %lu, \"oversize\": %lu}%s",
              d.name().c_str(), c.rx.load(), c.tx.load(), c.lost.load(),
              c.duplicated.load(), c.reordered.load(), c.corrupted.load(),
              c.overflow.load(), c.send_errors.load(), c.oversize.load(), last ? "" : ", ");
}

int relay(const Options& o) {
  Port a = open_port(o.port_a);
  Port b = open_port(o.port_b);
  Fd stop(eventfd(0, EFD_CLOEXEC));
  if (!stop.valid()) throw Error(std::string("eventfd: ") + std::strerror(errno));

  // Signals are taken by sigwait() in this thread only; the relay threads never
  // see them, so their syscalls are not interrupted mid-batch.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  uint64_t seed = o.seed ? *o.seed : std::random_device{}();
  Direction a2b("a2b", o.a2b, a, b, stop.get(), seed);
  Direction b2a("b2a", o.b2a, b, a, stop.get(), seed ^ 0x9e3779b97f4a7c15ull);

  std::exception_ptr failure[2];
  auto start = [&](Direction& d, std::exception_ptr& f) {
    return std::thread([&d, &f, &stop] {
      try {
        d.run();
      } catch (...) {
        f = std::current_exception();
        uint64_t one = 1;  // wake the main thread and the other direction
        (void)!write(stop.get(), &one, sizeof one);
        kill(getpid(), SIGTERM);
      }
    });
  };
  std::thread t1 = start(a2b, failure[0]);
  std::thread t2 = start(b2a, failure[1]);
  std::printf("hooker-linkemu: ready\n");
  std::fflush(stdout);

  int sig = 0;
  sigwait(&sigs, &sig);
  uint64_t one = 1;
  (void)!write(stop.get(), &one, sizeof one);
  t1.join();
  t2.join();

  std::printf("{");
  print_counters(a2b, false);
  print_counters(b2a, true);
  std::printf("}\n");
  std::fflush(stdout);
  for (auto& f : failure)
    if (f) std::rethrow_exception(f);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") {
      std::fputs(usage().c_str(), stdout);
      return 0;
    }
  }
  std::string error;
  auto opts = parse_options(args, error);
  if (!opts) {
    std::fprintf(stderr, "hooker-linkemu: %s\n", error.c_str());
    return 2;
  }
  try {
    return relay(*opts);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hooker-linkemu: %s\n", e.what());
    return 1;
  }
}
