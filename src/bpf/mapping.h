// A move-only owner of a shared mmap of a BPF array (BPF_F_MMAPABLE): the
// daemon reads and writes the elements in place, no system call per access.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <utility>

#include "core/result.h"

namespace hooker {

template <typename T>
class Mapping {
 public:
  Mapping() = default;
  static Result<Mapping> of(int map_fd, size_t entries) {
    size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    size_t len = (entries * sizeof(T) + page - 1) / page * page;
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
    if (p == MAP_FAILED) return sys_error("mmap a BPF array");
    Mapping m;
    m.base_ = static_cast<T*>(p);
    m.len_ = len;
    m.entries_ = entries;
    return m;
  }
  Mapping(Mapping&& o) noexcept
      : base_(std::exchange(o.base_, nullptr)), len_(o.len_), entries_(o.entries_) {}
  Mapping& operator=(Mapping&& o) noexcept {
    std::swap(base_, o.base_);
    std::swap(len_, o.len_);
    std::swap(entries_, o.entries_);
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (base_) munmap(base_, len_);
  }

  T* at(size_t i) const { return i < entries_ ? base_ + i : nullptr; }

 private:
  T* base_ = nullptr;
  size_t len_ = 0, entries_ = 0;
};

}  // namespace hooker
