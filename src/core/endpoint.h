// ADDR:PORT as given on the command line (--metrics): numeric addresses
// only, so what hookerd listens on never depends on a resolver.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "core/result.h"

namespace hooker {

struct Endpoint {
  sockaddr_storage addr{};  // sockaddr_in or sockaddr_in6
  socklen_t len = 0;
  std::string str() const;  // 127.0.0.1:9100, [::1]:9100
};

// "9100" (loopback: 127.0.0.1), "0.0.0.0:9100", "[::1]:9100", "[::]:9100".
// An error says what is wrong with the text in one line.
Result<Endpoint> parse_endpoint(const std::string& text);

}  // namespace hooker
