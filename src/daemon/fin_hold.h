// Keeps a moved connection's TCP FIN from overtaking its data.
//
// The FIN travels over TCP while the bytes before it travel through hookerd;
// a reader blocked in recv() that sees the FIN first gets EOF and the late
// bytes are lost (KERNEL.md). So incoming FINs on the policy's ports go to an
// NFQUEUE (iptables/ip6tables, --queue-bypass so nothing stalls if hookerd is
// gone), and hookerd lets a moved connection's FIN in only once every byte
// the peer wrote before it has been delivered to the application.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/abi.h"
#include "core/policy.h"
#include "core/result.h"

struct nfq_handle;
struct nfq_q_handle;
struct nfgenmsg;
struct nfq_data;

namespace hooker {

class FinHold {
 public:
  // Decides for each queued packet, a FIN or an RST: true lets it in now,
  // false holds it (the daemon calls release() later). `local` is the tuple
  // from the receiving socket's point of view, as on the wire (see
  // wire_flow). RSTs are queued so that one reaching a handshake hookerd
  // should complete first (Daemon::complete_handshake) finds it complete.
  using Decide = std::function<bool(const hk_flow& local, uint32_t packet_id, bool rst)>;

  static Result<std::unique_ptr<FinHold>> open(uint16_t queue_num, const Policy& policy,
                                               Decide decide);
  ~FinHold();
  FinHold(const FinHold&) = delete;
  FinHold& operator=(const FinHold&) = delete;

  int fd() const;
  Status on_readable();
  void release(uint32_t packet_id);

  // The policy changed: FINs on these ports are queued from now on / no
  // longer. Removing re-installs the rest of the port's rule group first,
  // so the other ports are never uncovered. Both refuse a port twice.
  Status add_ports(const std::vector<uint16_t>& ports);
  Status remove_port(uint16_t port);
  bool covers(uint16_t port) const;
  // The file's rules' ports: FINs in each range are queued from now on,
  // until exit (a reload adds ranges and never drops one: connections the
  // old rules moved may still be open, and on_fin lets the FINs of
  // connections it does not know through at once).
  Status hold_ranges(const std::vector<std::pair<uint16_t, uint16_t>>& ranges);
  // A port removed from the policy while moved connections on it live:
  // its FINs stay held until sweep() finds none left (add_ports takes it
  // back as it is).
  void keep_until_idle(uint16_t port);
  void sweep(const std::function<bool(uint16_t port)>& in_use);
  const std::vector<uint16_t>& idling() const { return idling_; }

  uint64_t queued = 0, held = 0, released = 0;
  uint64_t overflows = 0;  // times the queue dropped packets (hookerd too slow)

 private:
  FinHold() = default;
  // One rule per tool for up to 15 ports (multiport's limit).
  struct Group {
    std::vector<uint16_t> ports;
    std::vector<std::vector<std::string>> del;  // the commands that remove it
  };
  Result<Group> install(const std::vector<uint16_t>& ports, std::string list = "");
  std::vector<std::pair<uint16_t, uint16_t>> ranges_;  // held by hold_ranges
  static void uninstall(const Group& g);
  static int on_packet(nfq_q_handle* qh, nfgenmsg*, nfq_data* nfa, void* self);

  nfq_handle* h_ = nullptr;
  nfq_q_handle* qh_ = nullptr;
  uint16_t queue_num_ = 0;
  Decide decide_;
  std::vector<Group> groups_;  // installed, removed at exit
  std::vector<uint16_t> idling_;  // see keep_until_idle
};

// Runs a command, waits for it; the error carries its stderr.
Status run_command(const std::vector<std::string>& argv);

}  // namespace hooker
