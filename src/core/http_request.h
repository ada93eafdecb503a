// The little of HTTP/1.1 a metrics endpoint needs: one GET, its head only.
// Pure, so the unit tests feed it every malformed head they can think of.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace hooker {

// A request head bigger than this is refused (400) without reading more:
// a scraper's is a few hundred bytes.
constexpr size_t kMaxRequestHead = 4096;

struct HttpRequest {
  enum class State { kIncomplete, kBad, kDone } state = State::kIncomplete;
  std::string method, target;  // "GET", "/metrics" (query string cut off)
  std::string why;             // for kBad: said in the 400's body
};

// Looks at what arrived so far on a connection.
HttpRequest parse_http_head(std::string_view in);

// A whole response with Content-Length and Connection: close.
std::string http_response(int code, std::string_view content_type, std::string_view body);

}  // namespace hooker
