// The `udplite` mechanism's eBPF implementation: the same UdpMechanism
// (frames naming HK_MECH_UDPLITE), over a plain UDP socket on an internal
// port that the kernel picks, with GSO, GRO and checksums off; the tcx
// programs of bpf/udplite.bpf.c turn its datagrams into UDP-Lite on --port
// on the way out and back on the way in. The wire is the kernel
// implementation's: peers of either kind interoperate.
//
// Why the socket is not on --port: that is `udp`'s UDP port. Why GSO/GRO
// off: the egress hook runs before segmentation, and would see a 64 KB
// super-packet with one header for 44 datagrams. Why checksums off: the
// datagram leaves with ip_summed NONE and checksum 0, so neither the stack
// nor a device fills in a UDP checksum over what became UDP-Lite.
#include "mech/udplite/ebpf.h"

#include <nlohmann/json.hpp>

#include "core/abi.h"
#include "mech/udp/socket.h"
#include "mech/udp/udp.h"
#include "mech/udplite/lite_bpf.h"

namespace hooker {

namespace {

DatagramProto inner_proto() {
  DatagramProto p;  // UDP
  p.gso = p.gro = false;
  p.no_check = true;
  return p;
}

// A connection whose rule covers more than the headers (udplite:cov=N):
// the egress program finds its coverage by the token its datagrams carry,
// from the moment it opens until it is gone.
class CoveredConn final : public MechConn {
 public:
  CoveredConn(std::unique_ptr<MechConn> c, LiteBpf& bpf, uint64_t peer_token, Status set)
      : c_(std::move(c)), bpf_(bpf), peer_token_(peer_token), set_(std::move(set)) {}
  ~CoveredConn() override { bpf_.uncover(peer_token_); }

  void start() override {
    // Without its coverage, its bytes would leave less protected than its
    // rule asks: reset, loudly, instead.
    if (!set_) return c_->reset("udplite (ebpf): " + set_.error().message());
    c_->start();
  }
  void on_app_readable() override { c_->on_app_readable(); }
  void on_app_room() override { c_->on_app_room(); }
  void on_deadline(Time now) override { c_->on_deadline(now); }
  void reset(std::string_view why) override { c_->reset(why); }
  void retire() override { c_->retire(); }
  StreamStatus status() const override { return c_->status(); }

 private:
  std::unique_ptr<MechConn> c_;
  LiteBpf& bpf_;
  uint64_t peer_token_;
  Status set_;
};

// UdpMechanism, plus the BPF object it needs and its counters.
class EbpfLite final : public Mechanism {
 public:
  EbpfLite(std::unique_ptr<UdpMechanism> m, std::unique_ptr<LiteBpf> bpf, uint16_t inner)
      : m_(std::move(m)), bpf_(std::move(bpf)), inner_(inner) {}

  std::vector<int> fds() const override { return m_->fds(); }
  void on_readable(int fd) override { m_->on_readable(fd); }
  void on_writable(int fd) override { m_->on_writable(fd); }
  void flush() override { m_->flush(); }
  void reap() override { m_->reap(); }
  void housekeeping() override { m_->housekeeping(); }
  std::unique_ptr<MechConn> open(const PeerInfo& peer, AppPort& port) override {
    auto c = m_->open(peer, port);
    uint16_t cov = m_->coverage(peer);
    if (!cov) return c;  // the headers: the program's default
    Status set = bpf_->cover(peer.peer_token, cov);
    return std::make_unique<CoveredConn>(std::move(c), *bpf_, peer.peer_token, std::move(set));
  }
  void refuse(const PeerInfo& peer) override { m_->refuse(peer); }

  void status(nlohmann::json& out) const override {
    m_->status(out);
    out["impl"] = "ebpf";
    for (auto& [name, v] : bpf_->counters()) out["counters"][name] = v;
  }
  std::vector<std::string> loaded() const override {
    return {bpf_->describe(),
            "UDP socket on internal port " + std::to_string(inner_) +
                " (no checksum, no GSO/GRO)"};
  }

 private:
  // Declared first, destroyed last: the programs are gone before the
  // internal port is given back, so no other socket's datagrams on it are
  // ever rewritten.
  std::unique_ptr<UdpMechanism> m_;
  std::unique_ptr<LiteBpf> bpf_;
  uint16_t inner_;
};

}  // namespace

Result<std::unique_ptr<Mechanism>> udplite_ebpf_open(MechHost& host, const MechConfig& cfg) {
  if (cfg.ifaces.empty())
    return Error{"udplite (ebpf) needs an interface for its tcx programs: give hookerd --iface", 0};
  auto s = UdpSocket::open(0, inner_proto());  // port 0: the kernel picks one
  if (!s) return s.error();
  uint16_t inner = (*s)->port();
  auto bpf = LiteBpf::attach(cfg.port, inner, cfg.ifaces);
  if (!bpf) return bpf.error();
  auto m = std::make_unique<UdpMechanism>(host, s.take(), HK_MECH_UDPLITE, cfg.keepalive);
  return std::unique_ptr<Mechanism>(new EbpfLite(std::move(m), bpf.take(), inner));
}

}  // namespace hooker
