#include "core/rst.h"

#include <arpa/inet.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstring>

namespace hooker {

bool flow_is_v4(const hk_flow& f) {
  if (f.family == AF_INET) return true;
  // ::ffff:a.b.c.d
  return f.laddr[0] == 0 && f.laddr[1] == 0 && f.laddr[2] == htonl(0xffff);
}

uint32_t v4_word(const hk_flow& f, const uint32_t addr[4]) {
  return f.family == AF_INET ? addr[0] : addr[3];
}

static uint32_t sum16(const void* p, size_t n, uint32_t acc = 0) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i + 1 < n; i += 2) acc += static_cast<uint32_t>(b[i] << 8 | b[i + 1]);
  if (n & 1) acc += static_cast<uint32_t>(b[n - 1] << 8);
  return acc;
}

static uint16_t fold(uint32_t acc) {
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return htons(static_cast<uint16_t>(~acc));
}

// One TCP segment without payload in an IPv4 or IPv6 packet, checksummed.
static std::vector<uint8_t> build_segment(bool v4, const uint32_t from_addr[4],
                                          uint16_t from_port, const uint32_t to_addr[4],
                                          uint16_t to_port, const tcphdr& fields,
                                          std::span<const uint8_t> options) {
  tcphdr th = fields;
  th.source = htons(from_port);
  th.dest = htons(to_port);
  th.doff = static_cast<uint16_t>((sizeof(tcphdr) + options.size()) / 4);
  size_t tcp_len = sizeof(tcphdr) + options.size();
  std::vector<uint8_t> tcp(tcp_len);
  auto checksum = [&](const uint8_t* pseudo, size_t n) {
    th.check = 0;
    std::memcpy(tcp.data(), &th, sizeof(th));
    if (!options.empty()) std::memcpy(tcp.data() + sizeof(th), options.data(), options.size());
    th.check = fold(sum16(tcp.data(), tcp_len, sum16(pseudo, n)));
    std::memcpy(tcp.data(), &th, sizeof(th));
  };
  std::vector<uint8_t> out;
  if (v4) {
    iphdr ip{};
    ip.version = 4;
    ip.ihl = 5;
    ip.ttl = 64;
    ip.protocol = IPPROTO_TCP;
    ip.tot_len = htons(static_cast<uint16_t>(sizeof(iphdr) + tcp_len));
    ip.saddr = from_addr[0];
    ip.daddr = to_addr[0];
    ip.check = fold(sum16(&ip, sizeof(ip)));
    uint8_t pseudo[12];
    std::memcpy(pseudo, &ip.saddr, 4);
    std::memcpy(pseudo + 4, &ip.daddr, 4);
    pseudo[8] = 0;
    pseudo[9] = IPPROTO_TCP;
    uint16_t tl = htons(static_cast<uint16_t>(tcp_len));
    std::memcpy(pseudo + 10, &tl, 2);
    checksum(pseudo, sizeof(pseudo));
    out.resize(sizeof(ip));
    std::memcpy(out.data(), &ip, sizeof(ip));
  } else {
    ip6_hdr ip6{};
    ip6.ip6_flow = htonl(6u << 28);
    ip6.ip6_plen = htons(static_cast<uint16_t>(tcp_len));
    ip6.ip6_nxt = IPPROTO_TCP;
    ip6.ip6_hlim = 64;
    std::memcpy(&ip6.ip6_src, from_addr, 16);
    std::memcpy(&ip6.ip6_dst, to_addr, 16);
    uint8_t pseudo[40] = {};
    std::memcpy(pseudo, from_addr, 16);
    std::memcpy(pseudo + 16, to_addr, 16);
    uint32_t tl = htonl(static_cast<uint32_t>(tcp_len));
    std::memcpy(pseudo + 32, &tl, 4);
    pseudo[39] = IPPROTO_TCP;
    checksum(pseudo, sizeof(pseudo));
    out.resize(sizeof(ip6));
    std::memcpy(out.data(), &ip6, sizeof(ip6));
  }
  out.insert(out.end(), tcp.begin(), tcp.end());
  return out;
}

std::vector<uint8_t> build_rst(bool v4, const uint32_t from_addr[4], uint16_t from_port,
                               const uint32_t to_addr[4], uint16_t to_port, uint32_t seq) {
  tcphdr th{};
  th.seq = htonl(seq);
  th.rst = 1;
  return build_segment(v4, from_addr, from_port, to_addr, to_port, th, {});
}

std::vector<uint8_t> build_ack(bool v4, const uint32_t from_addr[4], uint16_t from_port,
                               const uint32_t to_addr[4], uint16_t to_port, uint32_t seq,
                               uint32_t ack, std::span<const uint8_t> options) {
  tcphdr th{};
  th.seq = htonl(seq);
  th.ack_seq = htonl(ack);
  th.ack = 1;
  th.window = htons(0xffff);
  return build_segment(v4, from_addr, from_port, to_addr, to_port, th, options);
}

}  // namespace hooker
