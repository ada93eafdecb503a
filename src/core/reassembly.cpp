#include "core/reassembly.h"

namespace hooker {

void Reassembly::append(std::span<const std::byte> d) {
  // Compact once the consumed prefix dominates, so memory stays bounded by
  // the window without a copy per datagram.
  if (head_ > 0 && head_ >= ready_.size() / 2) {
    ready_.erase(ready_.begin(), ready_.begin() + static_cast<std::ptrdiff_t>(head_));
    head_ = 0;
  }
  ready_.insert(ready_.end(), d.begin(), d.end());
  next_ += d.size();
}

Reassembly::Added Reassembly::add(uint64_t offset, std::span<const std::byte> d) {
  uint64_t end = offset + d.size();
  if (end <= next_) return Added::kDuplicate;
  if (end > limit_) return Added::kBeyondWindow;
  if (offset > next_) {
    auto [it, fresh] = ooo_.try_emplace(offset, d.begin(), d.end());
    if (!fresh) return Added::kDuplicate;
    ooo_bytes_ += d.size();
    return Added::kBuffered;
  }
  append(d.subspan(static_cast<size_t>(next_ - offset)));  // skip an overlap
  // Pull in whatever the new bytes made contiguous.
  while (!ooo_.empty() && ooo_.begin()->first <= next_) {
    auto node = ooo_.extract(ooo_.begin());
    ooo_bytes_ -= node.mapped().size();
    uint64_t e = node.key() + node.mapped().size();
    if (e > next_)
      append(std::span<const std::byte>(node.mapped()).subspan(
          static_cast<size_t>(next_ - node.key())));
  }
  return Added::kInOrder;
}

void Reassembly::consumed(size_t n) {
  head_ += n;
  delivered_ += n;
  if (head_ == ready_.size()) {
    ready_.clear();
    head_ = 0;
  }
}

}  // namespace hooker
