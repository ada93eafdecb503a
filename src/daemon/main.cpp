// hookerd: moves the payload of matching TCP connections onto UDP.
#include <cstdio>

#include "daemon/daemon.h"
#include "daemon/options.h"

int main(int argc, char** argv) {
  auto opt = hooker::parse_options(argc, argv);
  if (!opt) {
    if (opt.error().what.empty()) return 0;  // --help
    fprintf(stderr, "hookerd: %s\n", opt.error().message().c_str());
    return 2;
  }
  auto d = hooker::Daemon::start(*opt);
  if (!d) {
    // Everything attached so far was detached by the destructors.
    fprintf(stderr, "hookerd: %s\n", d.error().message().c_str());
    return 1;
  }
  printf("hookerd: ready\n");
  fflush(stdout);
  if (opt->verbose) {
    fprintf(stderr, "hookerd: start to ready %.2f ms:", (*d)->ready_ms);
    for (auto& [name, ms] : (*d)->startup_ms) fprintf(stderr, " %s %.2f", name.c_str(), ms);
    fprintf(stderr, "\n");
  }
  auto s = (*d)->run();
  if (!s) {
    fprintf(stderr, "hookerd: %s\n", s.error().message().c_str());
    return 1;
  }
  return 0;
}
