// Command line of hooker-linkemu: two ports and the impairments of each direction.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace linkemu {

// What one direction of the link does to the frames crossing it.
struct Impairment {
  uint64_t delay_ns = 0;     // fixed one-way delay
  uint64_t jitter_ns = 0;    // delay varies uniformly in [delay - jitter, delay + jitter]
  double loss = 0;           // probabilities in [0, 1]
  double dup = 0;
  double reorder = 0;        // sent without the delay, overtaking queued frames
  double corrupt = 0;        // one random bit flipped after the Ethernet header
  uint64_t rate_bps = 0;     // 0: unlimited
  uint32_t limit = 1000;     // frames waiting for the rate shaper before tail drop
};

struct Options {
  std::string port_a, port_b;  // interfaces in this netns: host a's side, host b's
  Impairment a2b, b2a;
  std::optional<uint64_t> seed;
};

// Parses argv; on bad input returns the one-line reason in `error`.
std::optional<Options> parse_options(const std::vector<std::string>& args, std::string& error);

std::string usage();

}  // namespace linkemu
