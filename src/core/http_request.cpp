#include "core/http_request.h"

namespace hooker {

HttpRequest parse_http_head(std::string_view in) {
  HttpRequest r;
  auto bad = [&](std::string why) {
    r.state = HttpRequest::State::kBad;
    r.why = std::move(why);
    return r;
  };
  size_t end = in.find("\r\n\r\n");
  size_t line_end = in.find("\r\n");
  // A request line can be judged before the head is whole: garbage is
  // refused at once instead of waiting for a blank line that never comes.
  if (line_end == std::string_view::npos) {
    if (in.size() >= kMaxRequestHead) return bad("request line too long");
    return r;
  }
  std::string_view line = in.substr(0, line_end);
  size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp2 == sp1)
    return bad("not a request line: METHOD TARGET HTTP/1.x");
  std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1),
                   version = line.substr(sp2 + 1);
  if (method.empty() || target.empty() || target.find(' ') != std::string_view::npos ||
      target[0] != '/')
    return bad("not a request line: METHOD TARGET HTTP/1.x");
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return bad("not HTTP/1.0 or HTTP/1.1");
  for (char c : method)
    if (c < 'A' || c > 'Z') return bad("not a method");
  if (end == std::string_view::npos) {
    if (in.size() >= kMaxRequestHead) return bad("request head too long");
    return r;
  }
  if (end + 4 > kMaxRequestHead) return bad("request head too long");
  r.method = method;
  r.target = target.substr(0, target.find('?'));
  r.state = HttpRequest::State::kDone;
  return r;
}

std::string http_response(int code, std::string_view content_type, std::string_view body) {
  const char* reason = code == 200   ? "OK"
                       : code == 400 ? "Bad Request"
                       : code == 404 ? "Not Found"
                       : code == 405 ? "Method Not Allowed"
                                     : "Error";
  std::string out = "HTTP/1.1 " + std::to_string(code) + " " + reason +
                    "\r\nContent-Type: " + std::string(content_type) +
                    "\r\nContent-Length: " + std::to_string(body.size()) +
                    "\r\nConnection: close\r\n";
  if (code == 405) out += "Allow: GET, HEAD\r\n";
  out += "\r\n";
  out += body;
  return out;
}

}  // namespace hooker
