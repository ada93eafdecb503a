// hookerd's log: one line per event on stderr, "hookerd: " first, filtered
// by level (--log-level / log_level). Info lines are plain ("hookerd: moved
// ..."); the others say their level the way compilers and git do
// ("hookerd: error: ...", "hookerd: warning: ...", "hookerd: debug: ..."),
// so a grep for "error:" finds the errors and the lines users already parse
// keep their text. Under systemd the journal gets each line's priority too
// (sd-daemon(3) "<3>" prefixes, see log.cpp).
//
// Per-connection lines (moved, refused, reset) go through a token bucket: a
// flood of connections cannot flood the log; what the bucket drops is
// counted and said in one "suppressed" line. At debug level every line is
// written.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "core/result.h"

namespace hooker::log {

enum class Level { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

// "error", "warn" (or "warning"), "info", "debug"; anything else is an error
// naming the value and the choices.
Result<Level> parse_level(std::string_view text);
const char* level_name(Level l);

void set_level(Level l);
Level level();
inline bool enabled(Level l) { return static_cast<int>(l) <= static_cast<int>(level()); }

// Where lines go: stderr unless a test sets another sink (nullptr: stderr).
// The sink gets the whole line, "hookerd: ..." with its newline.
using Sink = std::function<void(Level, std::string_view)>;
void set_sink(Sink s);

// One line (a line holding newlines becomes one line per piece).
void write(Level l, std::string_view text);
inline void error(std::string_view t) { write(Level::kError, t); }
inline void warn(std::string_view t) { write(Level::kWarn, t); }
inline void info(std::string_view t) { write(Level::kInfo, t); }
inline void debug(std::string_view t) { write(Level::kDebug, t); }

// libbpf's messages: its warnings at warn, its info and debug at debug,
// and the verifier's log of a program that failed to load at error (libbpf
// says it as a warning, framed by "-- BEGIN PROG LOAD LOG --"): that log is
// the only explanation of a failed start. `libbpf_level` is libbpf's enum
// libbpf_print_level (LIBBPF_WARN 0, LIBBPF_INFO 1, LIBBPF_DEBUG 2).
Level libbpf_level(int libbpf_level, std::string_view text);
// The message without libbpf's own "libbpf: " (hookerd's prefix comes
// first), then written at libbpf_level().
void libbpf_message(int libbpf_level, std::string_view text);

// A token bucket: `burst` lines at once, then `per_second` on average.
// Time is given by the caller, so the unit tests run it in virtual time.
class Bucket {
 public:
  using Clock = std::chrono::steady_clock;
  Bucket(double per_second, double burst) : rate_(per_second), burst_(burst), tokens_(burst) {}
  // Whether a line may go out at `now` (takes a token if so).
  bool admit(Clock::time_point now);

 private:
  double rate_, burst_, tokens_;
  Clock::time_point last_{};
  bool started_ = false;
};

// Per-connection lines at info, through a Bucket. What it drops is counted;
// the count is said ("suppressed K connection lines ...") before the next
// line it lets through, or by flush() once a second has passed since the
// first dropped line: a burst ends with at most one such line.
class ConnLines {
 public:
  static constexpr double kPerSecond = 10, kBurst = 10;
  using Clock = Bucket::Clock;
  ConnLines(double per_second = kPerSecond, double burst = kBurst)
      : bucket_(per_second, burst), per_second_(per_second) {}
  void line(std::string_view text, Clock::time_point now = Clock::now());
  void flush(Clock::time_point now = Clock::now());
  uint64_t suppressed_total() const { return suppressed_total_; }

 private:
  void say_suppressed(Clock::time_point now);
  Bucket bucket_;
  double per_second_;
  uint64_t suppressed_ = 0, suppressed_total_ = 0;
  Clock::time_point first_suppressed_{};
};

// hookerd's one ConnLines.
void conn(std::string_view text);
void flush_conn();

}  // namespace hooker::log
