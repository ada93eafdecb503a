// One direction of the emulated link: frames read from one port are impaired,
// held until their departure time, then written to the other port.
#pragma once
#include <atomic>
#include <cstdint>
#include <deque>
#include <random>
#include <string>
#include <vector>

#include "options.h"
#include "port.h"

namespace linkemu {

struct Counters {
  std::atomic<uint64_t> rx{0}, tx{0}, lost{0}, duplicated{0}, reordered{0}, corrupted{0},
      overflow{0}, send_errors{0}, oversize{0};
};

class Direction {
 public:
  // rx and tx stay owned by the caller and must outlive run(); stop_fd becoming
  // readable ends run().
  Direction(std::string name, const Impairment& imp, const Port& rx, const Port& tx,
            int stop_fd, uint64_t seed);

  void run();  // the relay loop; throws Error on a failure that cannot be counted
  const Counters& counters() const { return counters_; }
  const std::string& name() const { return name_; }

 private:
  struct Frame {
    uint64_t due_ns;
    std::vector<uint8_t> bytes;
  };

  void admit(const uint8_t* data, size_t len, uint64_t now);
  void schedule(std::vector<uint8_t> bytes, uint64_t now, bool reorder);
  void flush(uint64_t now);
  uint64_t next_due() const;
  std::vector<uint8_t> take_buffer(size_t len);
  bool chance(double p) { return p > 0 && unit_(rng_) < p; }

  std::string name_;
  Impairment imp_;
  const Port& rx_;
  const Port& tx_;
  int stop_fd_;
  Counters counters_;

  std::mt19937_64 rng_;
  std::uniform_real_distribution<double> unit_{0.0, 1.0};

  // Two lanes, each sorted by due time: delayed frames keep their order (jitter is
  // clamped to it), reordered ones skip the delay and overtake them.
  std::deque<Frame> delayed_, fast_;
  uint64_t last_delayed_due_ = 0;
  std::deque<uint64_t> shaper_ends_;  // when each frame still in the shaper is sent
  uint64_t shaper_busy_until_ = 0;
  std::vector<std::vector<uint8_t>> spare_;  // recycled frame buffers
  bool warned_oversize_ = false;
};

uint64_t now_ns();

}  // namespace linkemu
