// One side of the wire: an AF_PACKET socket that sees every frame arriving on an
// interface and can put whole Ethernet frames back on it.
#pragma once
#include <stdexcept>
#include <string>

#include "bpf/fd.h"  // the project's one Fd (src/bpf/fd.h)

namespace linkemu {

using hooker::Fd;

// A failure that stops the emulator; the message says what failed and on which port.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Port {
  std::string ifname;
  unsigned mtu = 0;  // the interface's MTU: frames above it cannot be sent on
  Fd fd;
};

// Opens and binds the port; throws Error naming the interface and the step.
Port open_port(const std::string& ifname);

}  // namespace linkemu
