#include "daemon/metrics.h"

#include <sys/epoll.h>
#include <sys/socket.h>

#include "core/http_request.h"

namespace hooker {

Result<MetricsServer> MetricsServer::open(const Endpoint& at) {
  Fd l(socket(at.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!l.valid()) return sys_error("--metrics " + at.str() + ": socket");
  int one = 1;
  setsockopt(l.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (at.addr.ss_family == AF_INET6)  // [::]:P means IPv6 only; 0.0.0.0:P is IPv4's
    setsockopt(l.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  if (bind(l.get(), reinterpret_cast<const sockaddr*>(&at.addr), at.len) < 0)
    return sys_error("--metrics " + at.str() + ": cannot listen there (another address or port?)");
  if (listen(l.get(), 16) < 0) return sys_error("--metrics " + at.str() + ": listen");
  Fd ep(epoll_create1(EPOLL_CLOEXEC));
  if (!ep.valid()) return sys_error("--metrics: epoll_create1");
  epoll_event e{};
  e.events = EPOLLIN;
  e.data.fd = l.get();
  if (epoll_ctl(ep.get(), EPOLL_CTL_ADD, l.get(), &e) < 0) return sys_error("--metrics: epoll_ctl");
  return MetricsServer(std::move(l), std::move(ep));
}

void MetricsServer::on_ready(const std::function<std::string()>& body) {
  epoll_event evs[32];
  int n = epoll_wait(ep_.get(), evs, 32, 0);
  for (int i = 0; i < n; i++) {
    if (evs[i].data.fd == listen_.get())
      accept_all();
    else
      on_client(evs[i].data.fd, evs[i].events, body);
  }
}

void MetricsServer::accept_all() {
  for (;;) {
    int fd = accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN, or a client gone already
    Fd f(fd);
    if (clients_.size() >= kMaxClients) continue;  // closed: a scraper retries
    epoll_event e{};
    e.events = EPOLLIN | EPOLLRDHUP;
    e.data.fd = fd;
    if (epoll_ctl(ep_.get(), EPOLL_CTL_ADD, fd, &e) < 0) continue;
    clients_.emplace(fd, Client{std::move(f), {}, {}, 0, std::chrono::steady_clock::now()});
  }
}

void MetricsServer::on_client(int fd, uint32_t events,
                              const std::function<std::string()>& body) {
  auto it = clients_.find(fd);
  if (it == clients_.end()) return;
  Client& c = it->second;
  if (!c.out.empty()) {  // answering: only room to write matters
    if (flush(c)) drop(fd);
    return;
  }
  char buf[1024];
  for (;;) {
    // Never more than the bound: what is past it is not read.
    size_t want = std::min(sizeof(buf), kMaxRequestHead + 1 - c.in.size());
    ssize_t r = recv(fd, buf, want, 0);
    if (r > 0) {
      c.in.append(buf, static_cast<size_t>(r));
      HttpRequest req = parse_http_head(c.in);
      if (req.state == HttpRequest::State::kIncomplete && c.in.size() <= kMaxRequestHead) continue;
      return answer(c, body);
    }
    if (r == 0 || (errno != EAGAIN && errno != EINTR)) return drop(fd);
    if (errno == EAGAIN) break;
  }
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) drop(fd);
}

void MetricsServer::answer(Client& c, const std::function<std::string()>& body) {
  HttpRequest req = parse_http_head(c.in);
  if (req.state != HttpRequest::State::kDone)
    c.out = http_response(400, "text/plain", "bad request: " + req.why + "\n");
  else if (req.target != "/metrics")
    c.out = http_response(404, "text/plain", "not found: the metrics are at /metrics\n");
  else if (req.method != "GET" && req.method != "HEAD")
    c.out = http_response(405, "text/plain", "use GET\n");
  else {
    c.out = http_response(200, "text/plain; version=0.0.4; charset=utf-8", body());
    if (req.method == "HEAD") c.out.resize(c.out.find("\r\n\r\n") + 4);
  }
  int fd = c.fd.get();
  if (flush(c)) return drop(fd);
  epoll_event e{};
  e.events = EPOLLOUT;
  e.data.fd = fd;
  epoll_ctl(ep_.get(), EPOLL_CTL_MOD, fd, &e);
}

bool MetricsServer::flush(Client& c) {
  while (c.sent < c.out.size()) {
    ssize_t w = send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) return errno != EAGAIN && errno != EINTR;  // a broken client: done with it
    c.sent += static_cast<size_t>(w);
  }
  shutdown(c.fd.get(), SHUT_WR);
  return true;
}

void MetricsServer::drop(int fd) {
  epoll_ctl(ep_.get(), EPOLL_CTL_DEL, fd, nullptr);
  clients_.erase(fd);
}

void MetricsServer::expire() {
  auto now = std::chrono::steady_clock::now();
  for (auto it = clients_.begin(); it != clients_.end();) {
    if (now - it->second.since > kClientTimeout) {
      epoll_ctl(ep_.get(), EPOLL_CTL_DEL, it->first, nullptr);
      it = clients_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace hooker
