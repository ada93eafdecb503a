// The BPF filesystem that hookerd pins its maps in. Many machines (containers,
// VMs without systemd) have nothing mounted at /sys/fs/bpf: hookerd then
// mounts one, as bpftool and other BPF agents do, and says so.
#pragma once

#include <string>
#include <utility>

#include "core/result.h"

namespace hooker {

// The directory that holds the kernel's default BPF filesystem.
inline constexpr const char* kBpffsRoot = "/sys/fs/bpf";

// The pin directory hookerd made, and the BPF filesystem it mounted, if it
// had to: both go when hookerd exits, however it started or failed (the pins
// in it are the kernel half's to remove). /sys/fs/bpf stays mounted (other
// BPF tools expect one there); a mount on a --pin-dir of the user's own is
// undone, and the directory removed.
class BpffsMount {
 public:
  BpffsMount() = default;
  BpffsMount(std::string at, std::string made) : at_(std::move(at)), made_(std::move(made)) {}
  BpffsMount(BpffsMount&& o) noexcept
      : at_(std::exchange(o.at_, {})), made_(std::exchange(o.made_, {})) {}
  BpffsMount& operator=(BpffsMount&& o) noexcept;
  BpffsMount(const BpffsMount&) = delete;
  BpffsMount& operator=(const BpffsMount&) = delete;
  ~BpffsMount() { release(); }

  const std::string& mounted_at() const { return at_; }  // empty: one was there

 private:
  void release();
  std::string at_;    // where it mounted one
  std::string made_;  // the pin directory, if it made it
};

// Makes `dir` a directory on a BPF filesystem. If the nearest existing
// ancestor is not on one, mounts one: at /sys/fs/bpf when `dir` is inside
// it, else at `dir` itself. The error is one line that names the command to
// run by hand.
Result<BpffsMount> ensure_bpffs(const std::string& dir);

// True if `path` exists and lies on a BPF filesystem.
bool on_bpffs(const std::string& path);

}  // namespace hooker
