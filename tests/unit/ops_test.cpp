// What hookerd parses for operators: --metrics ADDR:PORT, the metrics
// endpoint's HTTP request heads, and the exposition text it answers with.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/endpoint.h"
#include "core/http_request.h"
#include "core/prometheus.h"
#include "daemon/tuning.h"

namespace hooker {
namespace {

TEST(Endpoint, PortAloneMeansLoopback) {
  auto e = parse_endpoint("9100");
  ASSERT_TRUE(e) << e.error().what;
  EXPECT_EQ(e->str(), "127.0.0.1:9100");
  EXPECT_EQ(e->addr.ss_family, AF_INET);
  EXPECT_EQ(e->len, sizeof(sockaddr_in));
}

TEST(Endpoint, Ipv4AndIpv6) {
  for (auto [in, out] : {std::pair{"0.0.0.0:9100", "0.0.0.0:9100"},
                         {"10.1.2.3:1", "10.1.2.3:1"},
                         {"[::1]:9100", "[::1]:9100"},
                         {"[::]:65535", "[::]:65535"},
                         {"[fd77::2]:80", "[fd77::2]:80"}}) {
    auto e = parse_endpoint(in);
    ASSERT_TRUE(e) << in << ": " << e.error().what;
    EXPECT_EQ(e->str(), out);
  }
  EXPECT_EQ(parse_endpoint("[::1]:9100")->len, sizeof(sockaddr_in6));
}

TEST(Endpoint, BadOnesSayWhy) {
  struct { const char* text; const char* why; } cases[] = {
      {"", "is not a port number"},          {"0", "out of range"},
      {"65536", "out of range"},             {"-1", "is not a port number"},
      {"91OO", "is not a port number"},      {"localhost:9100", "not an IPv4 address"},
      {"1.2.3:9100", "not an IPv4 address"}, {"1.2.3.4:", "is not a port number"},
      {"::1:9100", "in brackets"},           {"[::1]", "not [IPV6]:PORT"},
      {"[::1:9100", "not [IPV6]:PORT"},      {"[1.2.3.4]:9100", "not an IPv6 address"},
      {"1.2.3.4:99999", "out of range"},     {"[::1]:x", "is not a port number"},
  };
  for (auto& c : cases) {
    auto e = parse_endpoint(c.text);
    ASSERT_FALSE(e) << c.text;
    EXPECT_NE(e.error().what.find(c.why), std::string::npos) << c.text << ": " << e.error().what;
    EXPECT_EQ(e.error().what.find('\n'), std::string::npos);
  }
}

using State = HttpRequest::State;

TEST(HttpHead, GetMetrics) {
  auto r = parse_http_head("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n");
  ASSERT_EQ(r.state, State::kDone) << r.why;
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.target, "/metrics");
  EXPECT_EQ(parse_http_head("GET /metrics?x=1 HTTP/1.0\r\n\r\n").target, "/metrics");
}

TEST(HttpHead, IncompleteUntilTheBlankLine) {
  EXPECT_EQ(parse_http_head("").state, State::kIncomplete);
  EXPECT_EQ(parse_http_head("GET /metr").state, State::kIncomplete);
  EXPECT_EQ(parse_http_head("GET /metrics HTTP/1.1\r\nHost: x\r\n").state, State::kIncomplete);
}

TEST(HttpHead, BadOnesAreRefusedEarly) {
  for (const char* in : {"hello\r\n", "GET\r\n\r\n", "GET /metrics\r\n\r\n",
                         "GET metrics HTTP/1.1\r\n\r\n", "GET /metrics HTTP/2\r\n",
                         "get /metrics HTTP/1.1\r\n", "GET  /metrics HTTP/1.1\r\n",
                         "\r\n\r\n"})
    EXPECT_EQ(parse_http_head(in).state, State::kBad) << in;
  // Too big, with or without a line end: refused at the bound, not later.
  EXPECT_EQ(parse_http_head(std::string(kMaxRequestHead, 'A')).state, State::kBad);
  std::string big = "GET /metrics HTTP/1.1\r\nX: " + std::string(kMaxRequestHead, 'a');
  EXPECT_EQ(parse_http_head(big).state, State::kBad);
}

TEST(HttpHead, Response) {
  std::string r = http_response(404, "text/plain", "no\n");
  EXPECT_EQ(r, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
               "Connection: close\r\n\r\nno\n");
}

TEST(Prometheus, FamiliesWithHelpTypeAndLabels) {
  auto stats = nlohmann::json::parse(R"({
    "counters": {"kernel": {"moved_active": 3, "no_slot": 0},
                 "daemon": {"conns_moved": 3},
                 "mechanisms": {"udp": {"bytes_sent": 100, "datagrams_sent": 2},
                                "udplite": {"bytes_sent": 7}}},
    "gauges": {"uptime_seconds": 1.5,
               "mechanisms": {"udp": {"deployed": 1, "connections": 2}}}})");
  std::string t = prometheus_text(stats);
  EXPECT_NE(t.find("# HELP hooker_kernel_moved_active_total kernel: connections moved, "
                   "connecting side\n# TYPE hooker_kernel_moved_active_total counter\n"
                   "hooker_kernel_moved_active_total 3\n"),
            std::string::npos) << t;
  EXPECT_NE(t.find("hooker_kernel_no_slot_total 0\n"), std::string::npos);
  EXPECT_NE(t.find("# TYPE hooker_conns_moved_total counter\nhooker_conns_moved_total 3\n"),
            std::string::npos);
  // One family, one HELP/TYPE block, a sample per mechanism.
  EXPECT_NE(t.find("# TYPE hooker_bytes_sent_total counter\n"
                   "hooker_bytes_sent_total{mechanism=\"udp\"} 100\n"
                   "hooker_bytes_sent_total{mechanism=\"udplite\"} 7\n"),
            std::string::npos) << t;
  EXPECT_NE(t.find("# TYPE hooker_connections gauge\nhooker_connections{mechanism=\"udp\"} 2\n"),
            std::string::npos);
  EXPECT_NE(t.find("hooker_uptime_seconds 1.5\n"), std::string::npos);
  // Every sample line's family was introduced by HELP and TYPE.
  size_t helps = 0, types = 0;
  for (size_t at = 0; (at = t.find("# HELP ", at)) != std::string::npos; at++) helps++;
  for (size_t at = 0; (at = t.find("# TYPE ", at)) != std::string::npos; at++) types++;
  EXPECT_EQ(helps, 8u);
  EXPECT_EQ(types, 8u);
}

TEST(Prometheus, OddNamesAndLabelsAreEscaped) {
  EXPECT_EQ(prometheus_name("hooker_a-b.c_total"), "hooker_a_b_c_total");
  EXPECT_EQ(prometheus_name("9x"), "_x");
  auto stats = nlohmann::json::parse(
      R"({"counters": {"mechanisms": {"we\"ird\\": {"x": 1, "not_a_number": "s"}}}})");
  std::string t = prometheus_text(stats);
  EXPECT_NE(t.find("hooker_x_total{mechanism=\"we\\\"ird\\\\\"} 1\n"), std::string::npos) << t;
  EXPECT_EQ(t.find("not_a_number"), std::string::npos);
  EXPECT_NE(t.find("# HELP hooker_x_total mechanism counter x\n"), std::string::npos);
}

}  // namespace
}  // namespace hooker

// The sweeps of embryonic tokens and FIN-ACK guards read the clock, then walk
// the map: an entry the kernel made meanwhile is stamped after that reading,
// and is young. (As an unsigned difference it was 2^64 ns old: a SYN-ACK's
// token went, and its connection was reset.)
TEST(Sweeps, StateMadeDuringTheWalkIsYoung) {
  constexpr uint64_t s = 1'000'000'000;
  EXPECT_FALSE(hooker::older_than(100 * s, 100 * s + 1, 75 * s));
  EXPECT_FALSE(hooker::older_than(100 * s, 100 * s, 75 * s));
  EXPECT_FALSE(hooker::older_than(100 * s, 30 * s, 75 * s));
  EXPECT_TRUE(hooker::older_than(100 * s, 24 * s, 75 * s));
}
