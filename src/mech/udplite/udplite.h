// The `udplite` mechanism: `udp`'s over UDP-Lite (udplite.cpp says how).
#pragma once

#include "mech/udp/socket.h"

namespace hooker {

// The UDP-Lite socket's settings: checksum coverage, no GSO or GRO.
DatagramProto udplite_proto();

}  // namespace hooker
