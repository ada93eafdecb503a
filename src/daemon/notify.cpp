#include "daemon/notify.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cstddef>
#include <cstdlib>
#include <string>

#include "bpf/fd.h"

namespace hooker {

Status notify_service_manager(std::string_view state) {
  const char* env = getenv("NOTIFY_SOCKET");
  if (!env || !*env) return ok();
  std::string path = env;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path[0] != '/' && path[0] != '@')
    return Error{"NOTIFY_SOCKET=" + path + ": not a path or an @abstract name", 0};
  if (path.size() >= sizeof(sa.sun_path))
    return Error{"NOTIFY_SOCKET=" + path + ": too long for a UNIX socket address", 0};
  path.copy(sa.sun_path, path.size());
  // An abstract address starts with a NUL and is exactly as long as its
  // name: no terminating NUL counted, or it names another socket.
  if (path[0] == '@') sa.sun_path[0] = '\0';
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() +
                                         (path[0] == '@' ? 0 : 1));
  Fd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return sys_error("sd_notify: socket");
  if (sendto(fd.get(), state.data(), state.size(), MSG_NOSIGNAL,
             reinterpret_cast<sockaddr*>(&sa), len) < 0)
    return sys_error("sd_notify " + std::string(state) + " to " + std::string(env));
  return ok();
}

}  // namespace hooker
