// The compiled-in mechanisms. A new one is a folder under src/mech and one
// line here; the conformance suite (tests/unit/mechanism_test.cpp) runs
// every line.
#include <array>

#include <nlohmann/json.hpp>

#include "core/abi.h"
#include "mech/mechanism.h"

namespace hooker {

Result<std::unique_ptr<Mechanism>> udp_open(MechHost& host, const MechConfig& cfg);
Result<std::unique_ptr<Mechanism>> udp_over(MechHost& host, std::unique_ptr<DatagramIo> io,
                                            const MechConfig& cfg);
Result<std::unique_ptr<Mechanism>> udplite_open(MechHost& host, const MechConfig& cfg);
Result<std::unique_ptr<Mechanism>> udplite_over(MechHost& host, std::unique_ptr<DatagramIo> io,
                                                const MechConfig& cfg);
Result<std::unique_ptr<Mechanism>> quic_open(MechHost& host, const MechConfig& cfg);
Result<std::unique_ptr<Mechanism>> quic_over(MechHost& host, std::unique_ptr<DatagramIo> io,
                                             const MechConfig& cfg);
Result<std::unique_ptr<Mechanism>> tcp_cc_open(MechHost& host, const MechConfig& cfg);

namespace {
const std::array kMechanisms = {
    MechKind{"udp", HK_MECH_UDP, /*reliable=*/false, udp_open, udp_over},
    MechKind{"udplite", HK_MECH_UDPLITE, /*reliable=*/false, udplite_open, udplite_over},
    // Every byte arrives: ngtcp2 retransmits.
    MechKind{"quic", HK_MECH_QUIC, /*reliable=*/true, quic_open, quic_over},
    // Carries nothing (the connection stays TCP): after every carrier.
    MechKind{"tcp-cc", HK_MECH_TCP_CC, /*reliable=*/true, tcp_cc_open, nullptr,
             /*takes_objects=*/true},
};
constexpr size_t kCarriers = 3;  // the entries with `over`, first
}  // namespace

std::span<const MechKind> mechanisms() { return kMechanisms; }
std::span<const MechKind> carriers() { return std::span(kMechanisms).first(kCarriers); }

void add_io_counters(nlohmann::json& counters, const DatagramIo& io) {
  counters["datagrams_sent"] = io.datagrams_sent;
  counters["datagrams_received"] = io.datagrams_received;
  counters["datagrams_truncated"] = io.truncated;
  counters["datagram_groups_split"] = io.groups_split;
  counters["datagrams_send_failed"] = io.send_failed;
}

void receive_all(DatagramIo& io, MechHost& host, const DatagramIo::Handler& on_datagram) {
  for (;;) {
    auto r = io.receive(on_datagram);
    if (!r) {
      host.log(r.error().message(), log::Level::kError);
      return;
    }
    if (!*r) return;  // drained
  }
}

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
