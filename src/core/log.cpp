#include "core/log.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace hooker::log {

namespace {

Level g_level = Level::kInfo;
Sink g_sink;

// Whether stderr is the journal: systemd sets JOURNAL_STREAM to the
// "device:inode" of the stream it connected to stdout/stderr; a stderr
// redirected elsewhere (hookerd 2>file inside the unit) no longer matches.
// Then each line starts with its syslog priority, "<3>" for an error
// (sd-daemon(3)): journald strips it and files the line at that priority,
// so `journalctl -u hookerd -p warning` shows errors and warnings only.
// Anywhere else the prefix would be noise in a terminal or a file.
bool stderr_is_journal() {
  const char* env = getenv("JOURNAL_STREAM");
  if (!env) return false;
  unsigned long long dev = 0, ino = 0;
  if (sscanf(env, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st;
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  return st.st_dev == dev && st.st_ino == ino;
}

// syslog priorities: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG.
const char* priority(Level l) {
  switch (l) {
    case Level::kError: return "<3>";
    case Level::kWarn: return "<4>";
    case Level::kInfo: return "<6>";
    case Level::kDebug: return "<7>";
  }
  return "";
}

const char* tag(Level l) {
  switch (l) {
    case Level::kError: return "error: ";
    case Level::kWarn: return "warning: ";
    case Level::kInfo: return "";
    case Level::kDebug: return "debug: ";
  }
  return "";
}

}  // namespace

Result<Level> parse_level(std::string_view t) {
  if (t == "error") return Level::kError;
  if (t == "warn" || t == "warning") return Level::kWarn;
  if (t == "info") return Level::kInfo;
  if (t == "debug") return Level::kDebug;
  return Error{"log level '" + std::string(t) + "': use error, warn, info or debug", 0};
}

const char* level_name(Level l) {
  switch (l) {
    case Level::kError: return "error";
    case Level::kWarn: return "warn";
    case Level::kInfo: return "info";
    case Level::kDebug: return "debug";
  }
  return "?";
}

void set_level(Level l) { g_level = l; }
Level level() { return g_level; }
void set_sink(Sink s) { g_sink = std::move(s); }

void write(Level l, std::string_view text) {
  if (!enabled(l)) return;
  static const bool journal = stderr_is_journal();
  while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  // A message of several lines (the verifier's log) stays one line each,
  // every one with the prefix and the level: grep and journald see them all.
  size_t start = 0;
  do {
    size_t end = std::min(text.find('\n', start), text.size());
    std::string line = (journal ? priority(l) : "") + std::string("hookerd: ") + tag(l);
    line.append(text.substr(start, end - start));
    line += '\n';
    if (g_sink)
      g_sink(l, line);
    else
      fwrite(line.data(), 1, line.size(), stderr);  // unbuffered: one write a line
    start = end + 1;
  } while (start < text.size());
}

Level libbpf_level(int lv, std::string_view text) {
  if (lv != 0) return Level::kDebug;
  if (text.find("-- BEGIN PROG LOAD LOG --") != std::string_view::npos) return Level::kError;
  return Level::kWarn;
}

void libbpf_message(int lv, std::string_view text) {
  Level l = libbpf_level(lv, text);
  if (!enabled(l)) return;
  std::string out;
  size_t start = 0;
  // Each line says it came from libbpf: "libbpf: " once per line.
  while (start < text.size()) {
    size_t end = std::min(text.find('\n', start), text.size());
    std::string_view line = text.substr(start, end - start);
    if (line.starts_with("libbpf: ")) line.remove_prefix(8);
    out += "libbpf: ";
    out.append(line);
    out += '\n';
    start = end + 1;
  }
  write(l, out);
}

bool Bucket::admit(Clock::time_point now) {
  if (started_) {
    double dt = std::chrono::duration<double>(now - last_).count();
    tokens_ = std::min(burst_, tokens_ + std::max(0.0, dt) * rate_);
  }
  started_ = true;
  last_ = now;
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

void ConnLines::say_suppressed(Clock::time_point now) {
  double s = std::chrono::duration<double>(now - first_suppressed_).count();
  char secs[32];
  snprintf(secs, sizeof(secs), "%.1f", s);
  info("suppressed " + std::to_string(suppressed_) + " connection lines in " + secs +
       " s (more than " + std::to_string(static_cast<int>(per_second_)) + " a second)");
  suppressed_ = 0;
}

void ConnLines::line(std::string_view text, Clock::time_point now) {
  // Lines that would not be shown cost nothing and are not counted.
  if (!enabled(Level::kInfo)) return;
  // Whoever asked for debug asked for every line.
  if (enabled(Level::kDebug)) return info(text);
  if (!bucket_.admit(now)) {
    if (suppressed_++ == 0) first_suppressed_ = now;
    suppressed_total_++;
    return;
  }
  if (suppressed_) say_suppressed(now);
  info(text);
}

void ConnLines::flush(Clock::time_point now) {
  if (suppressed_ && now - first_suppressed_ >= std::chrono::seconds(1)) say_suppressed(now);
}

namespace {
ConnLines& conn_lines() {
  static ConnLines c;
  return c;
}
}  // namespace

void conn(std::string_view text) { conn_lines().line(text); }
void flush_conn() { conn_lines().flush(); }

}  // namespace hooker::log
