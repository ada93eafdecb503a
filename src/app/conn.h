// One moved TCP connection, application side: its slot and lanes, delivery
// into the application socket, the FIN hold's state. It owns the wire side
// (`mech`, whichever mechanism the handshake named) and is the AppPort that
// mechanism sees.
#pragma once

#include <netinet/in.h>

#include <bitset>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "core/abi.h"
#include "mech/mechanism.h"

namespace hooker {

struct Conn;

// What an application side can wait for in one of hookerd's lists.
enum AppWait : uint8_t {
  kWaitAppRoom,  // the application did not take all bytes: the next tick
  kWaitLanding,  // a fast send still running held the slow lane: the next tick
  kAppWaitKinds,
};

// hookerd, as a connection's application side needs it.
class AppSide {
 public:
  virtual void wait(Conn& c, AppWait why) = 0;
  virtual void peer_finished(Conn& c) = 0;            // let its held FIN in
  virtual void sent_all(Conn& c) = 0;                 // retire it if it closed
  virtual void abort(Conn& c, std::string_view why) = 0;  // RSTs, then retire
  virtual void wake_at(Conn& c, Time t) = 0;

 protected:
  ~AppSide() = default;
};

struct Conn final : AppPort {
  explicit Conn(AppSide& side) : side_(side) {}

  // AppPort: what the mechanism pulls and pushes.
  ssize_t read(const iovec* iov, size_t n) override;  // app/lanes.cpp
  std::optional<uint64_t> final_length() const override {
    return app_shut_wr ? std::optional(app_total) : std::nullopt;
  }
  ssize_t deliver(std::span<const std::byte> bytes) override;
  void peer_finished() override {
    peer_done = true;
    side_.peer_finished(*this);
  }
  void sent_all() override {
    sent_whole = true;
    side_.sent_all(*this);
  }
  void abort(std::string_view why) override { side_.abort(*this, why); }
  void wake_at(Time t) override { side_.wake_at(*this, t); }

  // Lifetime (Daemon::retire). A retired connection has left every table and
  // every entry point returns at once on it, but its memory lasts until the
  // end of the event-loop turn (Daemon::reap): a pointer taken during the
  // turn, by a caller up the stack or a list being walked, never dangles.
  bool retired = false;
  std::bitset<kAppWaitKinds> waiting;  // the lists it is in
  Time scheduled = kNever;  // its entry in hookerd's deadline heap

  std::unique_ptr<MechConn> mech;  // the wire side
  uint8_t mech_id = 0;
  uint32_t slot = 0;
  hk_flow app{};            // the application socket's own tuple
  uint64_t token = 0;       // ours: the peer puts it in every datagram
  uint64_t peer_token = 0;  // theirs
  sockaddr_in6 peer{};      // the peer hookerd
  bool active = false;      // this side connected
  int in_fd = -1;           // the slot's `in`: the slow lane; writes to the app
  int out_fd = -1;          // the slot's `out`: the fast lane
  hk_lanes* lanes = nullptr;  // shared with the sk_msg program
  uint64_t drained_for = 0;   // the slow-lane mode whose fast bytes are all read
  uint64_t taken = 0;         // bytes read from the lanes
  Time since = Clock::now();
  uint32_t snd_nxt = 0, rcv_nxt = 0;  // the application socket's, at bind
  bool app_shut_wr = false;  // the application will write no more
  uint64_t app_total = 0;    // and this is how much it wrote
  bool watching_room = false;  // for a writer the slow lane refused (writers.cpp)

  uint64_t* consumed = nullptr;  // the kernel's read counter (Kernel::consumed)
  uint64_t consumed_base = 0;  // this slot's counter at bind
  uint64_t delivered = 0;      // bytes written into the application socket
  std::vector<uint32_t> held_fins;  // NFQUEUE ids of the peer's FIN
  bool app_gone = false;       // the application socket closed
  bool inbound_dead = false;   // it can take no more bytes
  bool peer_done = false;      // every byte of the peer's stream delivered
  bool sent_whole = false;     // its own stream left, end included

  uint64_t app_reads() const;  // what the application has read of the slot

  // `peer_ended`: the mechanism knows the peer's stream length.
  const char* state(bool peer_ended) const {
    if (app_gone) return "closing";
    if (app_shut_wr && peer_ended) return "closing";
    if (app_shut_wr) return "local_shutdown";
    if (peer_ended) return "peer_shutdown";
    return "established";
  }

 private:
  AppSide& side_;
};

}  // namespace hooker
