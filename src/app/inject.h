// TCP segments hookerd injects into a moved connection's ends, through raw
// sockets: a moved connection carries no TCP payload, so each end's sequence
// numbers stay where the handshake left them (plus one for a FIN), and
// hookerd can write segments the kernel accepts as the peer's.
#pragma once

#include <cstdint>
#include <vector>

#include "bpf/fd.h"
#include "core/abi.h"
#include "core/result.h"

namespace hooker {

struct Conn;

class Injector {
 public:
  static Result<Injector> open();
  // Ends the connection as TCP would: both applications get an RST with the
  // exact sequence number (ECONNRESET). Returns how many of the four RSTs
  // left (two per end: see the .cpp).
  int reset(const Conn& c) const;
  // Wakes the local application's writer, refused by the slow lane, with
  // EPOLLOUT (hk_lanes.writer_waits). False if the ACK could not be sent.
  bool wake_writer(const Conn& c) const;
  // The client's last handshake ACK, to our socket still completing its
  // handshake (`wire`: the tuple as on the wire, from our side), when that
  // ACK was lost and the client's bytes came through hookerd anyway.
  bool complete_handshake(const hk_flow& wire, const hk_embryo& e) const;

 private:
  Injector(Fd v4, Fd v6) : raw4_(std::move(v4)), raw6_(std::move(v6)) {}
  // The application socket's two ends, as the raw packets address them.
  struct Ends {
    bool v4;
    uint32_t local[4], remote[4];
  };
  static Ends ends_of(const hk_flow& app);
  bool send(bool v4, const uint32_t* dst, const std::vector<uint8_t>& pkt) const;
  Fd raw4_, raw6_;
};

}  // namespace hooker
