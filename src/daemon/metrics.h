// The Prometheus endpoint (--metrics ADDR:PORT): HTTP/1.1 GET /metrics,
// served from hookerd's own loop. It never blocks: its sockets are
// non-blocking and behind an epoll of their own, which hookerd's loop polls
// as one descriptor. Bounded: at most kMaxClients at once, a request head of
// kMaxRequestHead bytes, kClientTimeout to send it; beyond any of these
// the client is answered 400 or dropped.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <unordered_map>

#include "bpf/fd.h"
#include "core/endpoint.h"
#include "core/result.h"

namespace hooker {

class MetricsServer {
 public:
  static constexpr size_t kMaxClients = 16;
  static constexpr auto kClientTimeout = std::chrono::seconds(5);

  static Result<MetricsServer> open(const Endpoint& at);
  int fd() const { return ep_.get(); }  // readable: call on_ready

  // Accepts, reads and answers what is ready; `body` renders the metrics.
  void on_ready(const std::function<std::string()>& body);
  // Drops clients that took longer than kClientTimeout (a slow or idle
  // one must not hold a place for ever).
  void expire();

 private:
  struct Client {
    Fd fd;
    std::string in, out;
    size_t sent = 0;
    std::chrono::steady_clock::time_point since;
  };
  MetricsServer(Fd listen, Fd ep) : listen_(std::move(listen)), ep_(std::move(ep)) {}
  void accept_all();
  void on_client(int fd, uint32_t events, const std::function<std::string()>& body);
  void answer(Client& c, const std::function<std::string()>& body);
  bool flush(Client& c);  // true once everything left
  void drop(int fd);

  Fd listen_, ep_;
  std::unordered_map<int, Client> clients_;
};

}  // namespace hooker
