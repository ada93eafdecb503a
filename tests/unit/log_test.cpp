// hookerd's log (core/log.h): levels, their parsing, libbpf's messages,
// and the rate limit of per-connection lines, in virtual time.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/log.h"

namespace hooker::log {
namespace {

using namespace std::chrono_literals;

// Captures what would reach stderr; puts the level and the sink back after.
struct Captured : ::testing::Test {
  std::vector<std::string> lines;
  void SetUp() override {
    set_sink([this](Level, std::string_view l) { lines.emplace_back(l); });
    set_level(Level::kInfo);
  }
  void TearDown() override {
    set_sink(nullptr);
    set_level(Level::kInfo);
  }
};

TEST(LogLevel, ParsesTheFourLevelsAndRefusesOthers) {
  EXPECT_EQ(*parse_level("error"), Level::kError);
  EXPECT_EQ(*parse_level("warn"), Level::kWarn);
  EXPECT_EQ(*parse_level("warning"), Level::kWarn);
  EXPECT_EQ(*parse_level("info"), Level::kInfo);
  EXPECT_EQ(*parse_level("debug"), Level::kDebug);
  for (const char* bad : {"", "INFO", "verbose", "3", "debug "}) {
    auto l = parse_level(bad);
    ASSERT_FALSE(l) << "parse_level(\"" << bad << "\")";
    EXPECT_EQ(l.error().what,
              "log level '" + std::string(bad) + "': use error, warn, info or debug");
  }
}

TEST_F(Captured, ALevelShowsItselfAndWhatIsMoreSevere) {
  set_level(Level::kWarn);
  error("e");
  warn("w");
  info("i");
  debug("d");
  EXPECT_EQ(lines, (std::vector<std::string>{"hookerd: error: e\n", "hookerd: warning: w\n"}));
  lines.clear();
  set_level(Level::kDebug);
  info("moved x");
  debug("d");
  EXPECT_EQ(lines, (std::vector<std::string>{"hookerd: moved x\n", "hookerd: debug: d\n"}));
}

TEST_F(Captured, EveryLineOfAMessageCarriesThePrefix) {
  error("first\nsecond\n");
  EXPECT_EQ(lines, (std::vector<std::string>{"hookerd: error: first\n", "hookerd: error: second\n"}));
}

TEST_F(Captured, LibbpfWarningsAtWarnTheVerifierLogAtErrorTheRestAtDebug) {
  EXPECT_EQ(libbpf_level(0, "libbpf: map 'x': failed to create\n"), Level::kWarn);
  EXPECT_EQ(libbpf_level(1, "libbpf: loaded kernel BTF\n"), Level::kDebug);
  EXPECT_EQ(libbpf_level(2, "libbpf: sec 'sockops': found program\n"), Level::kDebug);
  std::string verifier =
      "libbpf: prog 'hk_sockops': -- BEGIN PROG LOAD LOG --\n0: (b7) r0 = 0\n"
      "R1 invalid mem access 'scalar'\n-- END PROG LOAD LOG --\n";
  EXPECT_EQ(libbpf_level(0, verifier), Level::kError);
  set_level(Level::kError);
  libbpf_message(0, "libbpf: a warning\n");
  libbpf_message(2, "libbpf: debug talk\n");
  libbpf_message(0, verifier);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "hookerd: error: libbpf: prog 'hk_sockops': -- BEGIN PROG LOAD LOG --\n");
  EXPECT_EQ(lines[2], "hookerd: error: libbpf: R1 invalid mem access 'scalar'\n");
}

TEST(LogBucket, ABurstThenTheRate) {
  Bucket b(10, 10);
  auto t = Bucket::Clock::time_point{} + 1h;
  int admitted = 0;
  for (int i = 0; i < 100; i++) admitted += b.admit(t);
  EXPECT_EQ(admitted, 10);  // the burst, at one instant
  EXPECT_FALSE(b.admit(t + 50ms));  // half a token back
  EXPECT_TRUE(b.admit(t + 100ms));
  // A steady 100 a second for 10 s: 10 a second get through.
  admitted = 0;
  for (int i = 1; i <= 1000; i++) admitted += b.admit(t + 100ms + i * 10ms);
  EXPECT_NEAR(admitted, 100, 1);
  // A quiet minute refills the burst, no more.
  admitted = 0;
  for (int i = 0; i < 100; i++) admitted += b.admit(t + 80s);
  EXPECT_EQ(admitted, 10);
}

TEST_F(Captured, AFloodOfConnectionLinesIsCountedInOneSuppressedLine) {
  ConnLines c(10, 10);
  auto t = ConnLines::Clock::time_point{} + 1h;
  for (int i = 0; i < 200; i++) c.line("moved " + std::to_string(i), t);
  EXPECT_EQ(lines.size(), 10u);  // the burst; 190 are counted
  c.flush(t + 500ms);            // not yet: a second since the first dropped
  EXPECT_EQ(lines.size(), 10u);
  c.flush(t + 1200ms);
  ASSERT_EQ(lines.size(), 11u);
  EXPECT_EQ(lines.back().rfind("hookerd: suppressed 190 connection lines in ", 0), 0u)
      << lines.back();
  c.flush(t + 5s);  // nothing more to say
  EXPECT_EQ(lines.size(), 11u);
  EXPECT_EQ(c.suppressed_total(), 190u);
}

TEST_F(Captured, TheSuppressedCountComesBeforeTheNextLineLetThrough) {
  ConnLines c(10, 1);
  auto t = ConnLines::Clock::time_point{} + 1h;
  c.line("a", t);
  c.line("b", t);
  c.line("c", t);
  c.line("d", t + 150ms);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "hookerd: a\n");
  EXPECT_EQ(lines[1].rfind("hookerd: suppressed 2 connection lines", 0), 0u) << lines[1];
  EXPECT_EQ(lines[2], "hookerd: d\n");
}

TEST_F(Captured, ConnectionLinesBelowTheLevelAreNeitherShownNorCounted) {
  set_level(Level::kWarn);
  ConnLines c(10, 10);
  for (int i = 0; i < 50; i++) c.line("moved");
  c.flush(ConnLines::Clock::now() + 2s);
  EXPECT_TRUE(lines.empty());
  EXPECT_EQ(c.suppressed_total(), 0u);
}

TEST_F(Captured, AtDebugEveryConnectionLineIsWritten) {
  set_level(Level::kDebug);
  ConnLines c(10, 10);
  auto t = ConnLines::Clock::time_point{} + 1h;
  for (int i = 0; i < 200; i++) c.line("moved " + std::to_string(i), t);
  EXPECT_EQ(lines.size(), 200u);
  EXPECT_EQ(lines.back(), "hookerd: moved 199\n");
  EXPECT_EQ(c.suppressed_total(), 0u);
}

}  // namespace
}  // namespace hooker::log
