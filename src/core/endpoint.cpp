#include "core/endpoint.h"

#include <arpa/inet.h>

#include <charconv>

namespace hooker {

static Result<uint16_t> parse_port(const std::string& s) {
  unsigned v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size())
    return Error{"'" + s + "' is not a port number", 0};
  if (v < 1 || v > 65535) return Error{"port " + s + " is out of range: use 1..65535", 0};
  return static_cast<uint16_t>(v);
}

Result<Endpoint> parse_endpoint(const std::string& text) {
  const std::string usage = ": use PORT, IPV4:PORT or [IPV6]:PORT";
  std::string host = "127.0.0.1", port = text;  // a port alone: loopback
  bool v6 = false;
  if (!text.empty() && text[0] == '[') {
    auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return Error{"'" + text + "' is not [IPV6]:PORT" + usage, 0};
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    v6 = true;
  } else if (auto colon = text.find(':'); colon != std::string::npos) {
    if (text.find(':', colon + 1) != std::string::npos)
      return Error{"'" + text + "': an IPv6 address goes in brackets, [::1]:9100", 0};
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  auto p = parse_port(port);
  if (!p) return Error{p.error().what + usage, 0};
  Endpoint e;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&e.addr);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(*p);
    if (inet_pton(AF_INET6, host.c_str(), &a->sin6_addr) != 1)
      return Error{"'" + host + "' is not an IPv6 address" + usage, 0};
    e.len = sizeof(sockaddr_in6);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&e.addr);
    a->sin_family = AF_INET;
    a->sin_port = htons(*p);
    if (inet_pton(AF_INET, host.c_str(), &a->sin_addr) != 1)
      return Error{"'" + host + "' is not an IPv4 address (names are not resolved)" + usage, 0};
    e.len = sizeof(sockaddr_in);
  }
  return e;
}

std::string Endpoint::str() const {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (addr.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
    return "[" + std::string(buf) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
  inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
  return std::string(buf) + ":" + std::to_string(ntohs(a->sin_port));
}

}  // namespace hooker
