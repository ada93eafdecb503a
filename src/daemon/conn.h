// One moved TCP connection as hookerd sees it: the application-side slot,
// the peer, and both directions of the byte stream.
#pragma once

#include <netinet/in.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "core/abi.h"
#include "core/reassembly.h"

namespace hooker {

// Credit a sender starts with before any ACK: both sides know it.
constexpr uint32_t kInitialWindow = 256 * 1024;

struct Conn {
  Conn(size_t window) : in(window) {}

  uint32_t slot = 0;
  hk_flow app{};            // the application socket's own tuple
  uint64_t token = 0;       // ours: the peer puts it in every datagram
  uint64_t peer_token = 0;  // theirs: we put it in every datagram
  uint64_t cookie = 0;
  sockaddr_in6 peer{};      // the peer hookerd
  bool active = false;      // this side connected
  int in_fd = -1;           // the slot's inbound socket (read app, write app)
  int out_fd = -1;          // the slot's outbound socket (shut down at EOF)
  std::chrono::steady_clock::time_point since = std::chrono::steady_clock::now();

  // application -> peer
  uint64_t sent = 0;
  uint64_t peer_acked = 0;
  uint32_t peer_window = kInitialWindow;
  bool app_shut_wr = false;  // the application will write no more
  bool out_eof = false;      // every byte it wrote has been read
  bool end_sent = false;     // and the END frame is queued
  uint64_t credit() const {
    uint64_t limit = peer_acked + peer_window;
    return limit > sent ? limit - sent : 0;
  }

  // peer -> application
  Reassembly in;
  std::optional<uint64_t> peer_end;  // the peer's stream length, once known
  uint64_t acked = 0;                // delivered offset we last acknowledged
  std::vector<uint32_t> held_fins;   // NFQUEUE ids of the peer's FIN
  bool app_gone = false;             // the application socket closed
  bool inbound_dead = false;         // it can take no more bytes
  bool peer_done() const { return peer_end && in.delivered() == *peer_end; }

  const char* state() const {
    if (app_gone) return "closing";
    if (app_shut_wr && peer_end) return "closing";
    if (app_shut_wr) return "local_shutdown";
    if (peer_end) return "peer_shutdown";
    return "established";
  }
};

}  // namespace hooker
