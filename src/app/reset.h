// Ends a moved connection as TCP would: both applications get an RST with
// the exact sequence number (ECONNRESET). Owns the two raw sockets.
#pragma once

#include "bpf/fd.h"
#include "core/result.h"

namespace hooker {

struct Conn;

class RstInjector {
 public:
  static Result<RstInjector> open();
  // Returns how many of the four RSTs left (two per end: see the .cpp).
  int reset(const Conn& c) const;

 private:
  RstInjector(Fd v4, Fd v6) : raw4_(std::move(v4)), raw6_(std::move(v6)) {}
  Fd raw4_, raw6_;
};

}  // namespace hooker
