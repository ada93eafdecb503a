// The receiving half of a moved byte stream: datagrams arrive at byte
// offsets, maybe reordered or duplicated; the application must get exactly
// the bytes in order. Pure state, no I/O (unit tests and fuzzers call it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <vector>

namespace hooker {

class Reassembly {
 public:
  enum class Added { kInOrder, kBuffered, kDuplicate, kBeyondWindow };

  // `limit`: the stream offset the sender may send up to, as granted so
  // far; data beyond it is a protocol violation and is refused. The limit
  // only grows: what was granted is never taken back.
  explicit Reassembly(uint64_t limit) : limit_(limit) {}

  Added add(uint64_t offset, std::span<const std::byte> data);

  // In-order bytes not yet taken by the application.
  std::span<const std::byte> ready() const {
    return {ready_.data() + head_, ready_.size() - head_};
  }
  void consumed(size_t n);

  uint64_t delivered() const { return delivered_; }   // taken by the app
  uint64_t next() const { return next_; }             // next offset expected
  size_t buffered() const { return ready_.size() - head_ + ooo_bytes_; }
  size_t out_of_order() const { return ooo_.size(); }
  uint64_t limit() const { return limit_; }
  void raise_limit(uint64_t l) { limit_ = l > limit_ ? l : limit_; }

 private:
  void append(std::span<const std::byte> d);

  uint64_t limit_;
  uint64_t delivered_ = 0, next_ = 0;
  std::vector<std::byte> ready_;
  size_t head_ = 0;
  std::map<uint64_t, std::vector<std::byte>> ooo_;
  size_t ooo_bytes_ = 0;
};

}  // namespace hooker
