#include "direction.h"

#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace linkemu {
namespace {

constexpr unsigned kBatch = 64;              // frames per recvmmsg/sendmmsg
constexpr size_t kMaxFrame = 65536;          // a GSO blob fits, so it can be reported
constexpr size_t kMaxQueued = 1 << 16;       // frames held per direction: bounds memory
constexpr uint64_t kIdlePollNs = 1'000'000'000;

}  // namespace

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

Direction::Direction(std::string name, const Impairment& imp, const Port& rx, const Port& tx,
                     int stop_fd, uint64_t seed)
    : name_(std::move(name)), imp_(imp), rx_(rx), tx_(tx), stop_fd_(stop_fd), rng_(seed) {}

std::vector<uint8_t> Direction::take_buffer(size_t len) {
  std::vector<uint8_t> b;
  if (!spare_.empty()) {
    b = std::move(spare_.back());
    spare_.pop_back();
  }
  b.resize(len);
  return b;
}

void Direction::admit(const uint8_t* data, size_t len, uint64_t now) {
  counters_.rx++;
  if (len > tx_.mtu + 18) {  // Ethernet header + one VLAN tag above the MTU
    // A TSO/GSO blob: relaying it is impossible and impairing it would be wrong
    // (one "loss" would drop dozens of wire frames).
    counters_.oversize++;
    if (!warned_oversize_) {
      std::fprintf(stderr, "hooker-linkemu: %s: %zu-byte frame above the MTU of %s; turn "
                   "off offloads on the hosts: ethtool -K eth0 tso off gso off\n",
                   name_.c_str(), len, tx_.ifname.c_str());
      warned_oversize_ = true;
    }
    return;
  }
  if (chance(imp_.loss)) {
    counters_.lost++;
    return;
  }
  std::vector<uint8_t> bytes = take_buffer(len);
  std::memcpy(bytes.data(), data, len);
  if (len > 14 && chance(imp_.corrupt)) {
    // After the Ethernet header, so the frame still reaches the host and its
    // IP/TCP/UDP checksums are what notice, as with a real bit error.
    size_t bit = std::uniform_int_distribution<size_t>(14 * 8, len * 8 - 1)(rng_);
    bytes[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    counters_.corrupted++;
  }
  bool reorder = chance(imp_.reorder);
  if (chance(imp_.dup)) {
    counters_.duplicated++;
    std::vector<uint8_t> copy = take_buffer(len);
    std::memcpy(copy.data(), bytes.data(), len);
    schedule(std::move(bytes), now, reorder);
    schedule(std::move(copy), now, false);
  } else {
    schedule(std::move(bytes), now, reorder);
  }
}

void Direction::schedule(std::vector<uint8_t> bytes, uint64_t now, bool reorder) {
  if (delayed_.size() + fast_.size() >= kMaxQueued) {
    counters_.overflow++;
    spare_.push_back(std::move(bytes));
    return;
  }
  uint64_t sent = now;
  if (imp_.rate_bps) {
    // Serialisation at the configured rate with a FIFO of `limit` frames: a frame
    // leaves the shaper once every frame before it has, or is tail-dropped.
    while (!shaper_ends_.empty() && shaper_ends_.front() <= now) shaper_ends_.pop_front();
    if (shaper_ends_.size() >= imp_.limit) {
      counters_.overflow++;
      spare_.push_back(std::move(bytes));
      return;
    }
    uint64_t start = std::max(now, shaper_busy_until_);
    shaper_busy_until_ = start + bytes.size() * 8 * 1'000'000'000ull / imp_.rate_bps;
    shaper_ends_.push_back(shaper_busy_until_);
    sent = shaper_busy_until_;
  }
  if (reorder) {
    counters_.reordered++;
    fast_.push_back({sent, std::move(bytes)});
    return;
  }
  int64_t delay = static_cast<int64_t>(imp_.delay_ns);
  if (imp_.jitter_ns) {
    auto j = static_cast<int64_t>(imp_.jitter_ns);
    delay += std::uniform_int_distribution<int64_t>(-j, j)(rng_);
  }
  // Jitter varies the delay but never the order: a frame waits for the one ahead.
  uint64_t due = std::max(sent + static_cast<uint64_t>(std::max<int64_t>(delay, 0)),
                          last_delayed_due_);
  last_delayed_due_ = due;
  delayed_.push_back({due, std::move(bytes)});
}

uint64_t Direction::next_due() const {
  uint64_t due = UINT64_MAX;
  if (!delayed_.empty()) due = delayed_.front().due_ns;
  if (!fast_.empty()) due = std::min(due, fast_.front().due_ns);
  return due;
}

void Direction::flush(uint64_t now) {
  mmsghdr msgs[kBatch];
  iovec iov[kBatch];
  Frame batch[kBatch];
  for (;;) {
    unsigned n = 0;
    while (n < kBatch && next_due() <= now) {
      auto& lane = (!fast_.empty() && (delayed_.empty() ||
                                       fast_.front().due_ns <= delayed_.front().due_ns))
                       ? fast_ : delayed_;
      batch[n] = std::move(lane.front());
      lane.pop_front();
      iov[n] = {batch[n].bytes.data(), batch[n].bytes.size()};
      msgs[n] = {};
      msgs[n].msg_hdr.msg_iov = &iov[n];
      msgs[n].msg_hdr.msg_iovlen = 1;
      ++n;
    }
    if (n == 0) return;
    for (unsigned done = 0; done < n;) {
      int r = sendmmsg(tx_.fd.get(), msgs + done, n - done, 0);
      if (r < 0) {
        if (errno == EINTR) continue;
        // A frame the kernel refuses (no buffer space, link down) is a lost frame,
        // counted apart from the configured loss so a test can tell them apart.
        counters_.send_errors++;
        ++done;
        continue;
      }
      counters_.tx += static_cast<unsigned>(r);
      done += static_cast<unsigned>(r);
    }
    for (unsigned i = 0; i < n; ++i) spare_.push_back(std::move(batch[i].bytes));
  }
}

void Direction::run() {
  // Default timer slack (50 us) would blur the delay; the tests hold it to 1 ms.
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  std::vector<uint8_t> arena(kBatch * kMaxFrame);
  mmsghdr msgs[kBatch];
  iovec iov[kBatch];
  for (;;) {
    uint64_t now = now_ns();
    flush(now);
    uint64_t due = next_due();
    uint64_t wait = due == UINT64_MAX ? kIdlePollNs : (due > now ? due - now : 0);
    timespec ts{static_cast<time_t>(wait / 1'000'000'000u),
                static_cast<long>(wait % 1'000'000'000u)};
    pollfd fds[2] = {{rx_.fd.get(), POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    int r = ppoll(fds, 2, &ts, nullptr);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw Error(name_ + ": ppoll: " + std::strerror(errno));
    }
    if (fds[1].revents) return;
    if (!(fds[0].revents & POLLIN)) continue;
    for (unsigned i = 0; i < kBatch; ++i) {
      iov[i] = {arena.data() + i * kMaxFrame, kMaxFrame};
      msgs[i] = {};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int got = recvmmsg(rx_.fd.get(), msgs, kBatch, MSG_DONTWAIT, nullptr);
    if (got < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      throw Error(name_ + ": recvmmsg on " + rx_.ifname + ": " + std::strerror(errno));
    }
    now = now_ns();
    for (int i = 0; i < got; ++i)
      admit(arena.data() + static_cast<size_t>(i) * kMaxFrame, msgs[i].msg_len, now);
  }
}

}  // namespace linkemu
