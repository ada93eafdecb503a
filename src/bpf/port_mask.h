// hk_port_mask in hookerd: the server ports some rule names, kept in the
// redirector's mmaped array so the handshake callbacks of every other
// connection leave at once. Widened before a rule goes into the kernel,
// narrowed once one is gone: a bit is never missing for a live rule.
#pragma once

#include <cstdint>
#include <set>
#include <utility>
#include <vector>

#include "bpf/mapping.h"
#include "core/abi.h"
#include "core/result.h"

namespace hooker {

class PortMask {
 public:
  static Result<PortMask> of(int map_fd);

  // A port rule: before it goes in, and after it is gone.
  void add_port(uint16_t port);
  void drop_port(uint16_t port);
  // The file's rules: before the new table goes in, and after.
  void widen(const hk_rules& t);
  void set_file(const hk_rules& t);

 private:
  void narrow();  // exactly the ports of the rules held now
  Mapping<hk_port_mask> map_;
  std::set<uint16_t> ports_;
  std::vector<std::pair<uint16_t, uint16_t>> ranges_;
};

}  // namespace hooker
