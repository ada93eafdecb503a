// Congestion controls in a BPF object (struct_ops tcp_congestion_ops maps),
// registered with the kernel for exactly as long as their CcObject lives.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "bpf/fd.h"
#include "core/result.h"

struct bpf_object;
struct bpf_link;

namespace hooker {

// The congestion controls registered on this kernel now, built in or BPF:
// one list for every network namespace.
std::vector<std::string> registered_ccs();

class CcObject {
 public:
  struct Algo {
    std::string name;
    bool ours;  // registered by this object; else one of that name was there
  };

  // An object in memory (a built-in skeleton's ELF). `adopt`: an algorithm
  // whose name is registered already (another hookerd on this kernel
  // registered its own copy) is used as it is instead of refused.
  static Result<std::unique_ptr<CcObject>> load(const void* elf, size_t size,
                                                const std::string& origin, bool adopt);
  // A user's object file: every algorithm in it must register.
  static Result<std::unique_ptr<CcObject>> load_file(const std::string& path);
  ~CcObject();  // unregisters what it registered, then unloads
  CcObject(const CcObject&) = delete;
  CcObject& operator=(const CcObject&) = delete;

  const std::vector<Algo>& algos() const { return algos_; }
  const std::string& origin() const { return origin_; }

 private:
  CcObject() = default;
  Status load_and_register(bool adopt);

  bpf_object* obj_ = nullptr;
  std::vector<Fd> links_;  // struct_ops links: each one's registration
  std::vector<Algo> algos_;
  std::string origin_;
  std::vector<char> log_;  // the verifier's log of a failed load
};

}  // namespace hooker
