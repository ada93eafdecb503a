#include "core/socket_pair.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cerrno>
#include <initializer_list>

namespace hooker {

bool pair_is_quiet(int a, int b) {
  // Send queues first: a byte acknowledged is in the peer's queue, where
  // the peek below sees it; one still unacknowledged may land later.
  for (int fd : {a, b}) {
    int unacked = 0;
    if (ioctl(fd, SIOCOUTQ, &unacked) != 0 || unacked != 0) return false;
  }
  for (int fd : {a, b}) {
    char c;
    if (recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) != -1 || errno != EAGAIN) return false;
  }
  return true;
}

}  // namespace hooker
