#include "bpf/bpffs.h"

#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/statfs.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <vector>

namespace hooker {

namespace fs = std::filesystem;

BpffsMount& BpffsMount::operator=(BpffsMount&& o) noexcept {
  if (this != &o) {
    release();
    at_ = std::exchange(o.at_, {});
    made_ = std::exchange(o.made_, {});
  }
  return *this;
}

void BpffsMount::release() {
  // Only if empty: a pin left behind is a failure to see, not to hide.
  if (!made_.empty() && made_ != at_) rmdir(made_.c_str());
  if (!at_.empty() && at_ != kBpffsRoot && umount2(at_.c_str(), MNT_DETACH) == 0)
    rmdir(at_.c_str());
  at_.clear();
  made_.clear();
}

bool on_bpffs(const std::string& path) {
  struct statfs st {};
  return statfs(path.c_str(), &st) == 0 && st.f_type == static_cast<decltype(st.f_type)>(BPF_FS_MAGIC);
}

static bool inside(const fs::path& p, const fs::path& root) {
  auto [r, _] = std::mismatch(root.begin(), root.end(), p.begin(), p.end());
  return r == root.end();
}

Result<BpffsMount> ensure_bpffs(const std::string& dir) {
  fs::path want = fs::path(dir).lexically_normal();
  if (!want.is_absolute()) return Error{"--pin-dir must be an absolute path: " + dir, 0};
  fs::path existing = want;
  std::error_code ec;
  while (!fs::exists(existing, ec) && existing.has_relative_path()) existing = existing.parent_path();

  std::string at_mount;
  if (!on_bpffs(existing.string())) {
    // Pins cannot live on any other filesystem (bpf_obj_pin fails with
    // EPERM there): mount one where a user of BPF tools would look for it.
    fs::path at = inside(want, kBpffsRoot) ? fs::path(kBpffsRoot) : want;
    std::string hint = "mount -t bpf bpf " + at.string();
    // The directories made for the mount point, deepest first: a failed
    // start removes them again.
    std::vector<fs::path> made;
    for (fs::path p = at; !fs::exists(p, ec) && p.has_relative_path(); p = p.parent_path())
      made.push_back(p);
    auto unmake = [&made] {
      for (auto& p : made)
        if (rmdir(p.c_str()) != 0 && errno != ENOENT) break;
    };
    fs::create_directories(at, ec);
    if (ec) {
      unmake();
      return Error{"pin directory " + dir + " is not on a BPF filesystem and " + at.string() +
                       " cannot be created (" + ec.message() + "): run '" + hint +
                       "' or give --pin-dir a directory on a BPF filesystem",
                   0};
    }
    if (mount("bpf", at.c_str(), "bpf", 0, "mode=0700") != 0) {
      int err = errno;
      unmake();
      return Error{"pin directory " + dir + " is not on a BPF filesystem and mounting one at " +
                       at.string() + " failed (" + std::strerror(err) + "): run '" + hint +
                       "' or give --pin-dir a directory on a BPF filesystem",
                   0};
    }
    at_mount = at.string();
  }
  bool make = !fs::exists(want, ec);
  BpffsMount m(at_mount, make ? want.string() : std::string());
  fs::create_directories(want, ec);
  if (ec) return Error{"create pin directory " + dir + ": " + ec.message(), 0};
  return m;
}

}  // namespace hooker
