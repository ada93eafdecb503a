// The compiled-in mechanisms. A new one is a folder under src/mech and one
// line here; the conformance suite (tests/unit/mechanism_test.cpp) runs
// every line.
#include <array>

#include "core/abi.h"
#include "mech/mechanism.h"

namespace hooker {

Result<std::unique_ptr<Mechanism>> udp_open(MechHost& host, const MechConfig& cfg);
std::unique_ptr<Mechanism> udp_over(MechHost& host, std::unique_ptr<DatagramIo> io);
Result<std::unique_ptr<Mechanism>> udplite_open(MechHost& host, const MechConfig& cfg);
std::unique_ptr<Mechanism> udplite_over(MechHost& host, std::unique_ptr<DatagramIo> io);

namespace {
const std::array kMechanisms = {
    MechKind{"udp", HK_MECH_UDP, /*reliable=*/false, udp_open, udp_over},
    MechKind{"udplite", HK_MECH_UDPLITE, /*reliable=*/false, udplite_open, udplite_over},
};
}  // namespace

std::span<const MechKind> mechanisms() { return kMechanisms; }

const MechKind* find_mechanism(std::string_view name) {
  for (const MechKind& k : kMechanisms)
    if (k.name == name) return &k;
  return nullptr;
}

const MechKind* find_mechanism(uint8_t id) {
  for (const MechKind& k : kMechanisms)
    if (k.id == id) return &k;
  return nullptr;
}

}  // namespace hooker
