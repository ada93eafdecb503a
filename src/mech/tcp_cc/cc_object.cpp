#include "mech/tcp_cc/cc_object.h"
#include "bpf/uapi_new.h"
#include "core/log.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace hooker {

namespace {
constexpr size_t kLogSize = 1 << 20;

// The verifier's reason: the last lines of its log (the source line, the
// instruction, the refusal), minus its statistics, in one line.
std::string verifier_reason(const std::vector<char>& log) {
  std::istringstream in(std::string(log.data(), strnlen(log.data(), log.size())));
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);)
    if (!l.empty() && !l.starts_with("processed ") && !l.starts_with("verification time") &&
        !l.starts_with("stack depth"))
      lines.push_back(l);
  std::string out;
  for (size_t i = lines.size() > 3 ? lines.size() - 3 : 0; i < lines.size(); i++)
    out += (out.empty() ? "" : " / ") + lines[i];
  return out;
}

// The struct's name of a struct_ops map: its variable's type in the
// object's ".struct_ops" section (libbpf 1.1 knows it only after load).
std::string struct_ops_type(bpf_object* obj, const bpf_map* map) {
  const btf* b = bpf_object__btf(obj);
  if (!b) return "?";
  int sec = btf__find_by_name_kind(b, ".struct_ops", BTF_KIND_DATASEC);
  const btf_type* ds = sec > 0 ? btf__type_by_id(b, sec) : nullptr;
  if (!ds) return "?";
  const btf_var_secinfo* vs = btf_var_secinfos(ds);
  for (int i = 0; i < btf_vlen(ds); i++) {
    const btf_type* var = btf__type_by_id(b, vs[i].type);
    if (!var || std::string(btf__name_by_offset(b, var->name_off)) != bpf_map__name(map))
      continue;
    int id = btf__resolve_type(b, var->type);
    const btf_type* t = id > 0 ? btf__type_by_id(b, id) : nullptr;
    return t ? btf__name_by_offset(b, t->name_off) : "?";
  }
  return "?";
}
}  // namespace

std::vector<std::string> registered_ccs() {
  std::ifstream f("/proc/sys/net/ipv4/tcp_available_congestion_control");
  std::vector<std::string> v;
  for (std::string n; f >> n;) v.push_back(n);
  return v;
}

Result<std::unique_ptr<CcObject>> CcObject::load(const void* elf, size_t size,
                                                 const std::string& origin, bool adopt) {
  std::unique_ptr<CcObject> o(new CcObject());
  o->origin_ = origin;
  o->log_.assign(kLogSize, '\0');
  LIBBPF_OPTS(bpf_object_open_opts, opts, .object_name = "hk_tcp_cc",
              .kernel_log_buf = o->log_.data(), .kernel_log_size = o->log_.size());
  o->obj_ = bpf_object__open_mem(elf, size, &opts);
  if (!o->obj_) return sys_error("open the BPF object of " + origin);
  if (auto s = o->load_and_register(adopt); !s) return s.error();
  return o;
}

Result<std::unique_ptr<CcObject>> CcObject::load_file(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return sys_error("cannot read " + path);
  if (!S_ISREG(st.st_mode)) return Error{path + " is not a file (a BPF object, FILE.bpf.o)", 0};
  std::unique_ptr<CcObject> o(new CcObject());
  o->origin_ = path;
  o->log_.assign(kLogSize, '\0');
  LIBBPF_OPTS(bpf_object_open_opts, opts, .kernel_log_buf = o->log_.data(),
              .kernel_log_size = o->log_.size());
  o->obj_ = bpf_object__open_file(path.c_str(), &opts);
  if (!o->obj_) {
    int err = errno;  // libbpf's own codes (4000 and up) mean nothing to strerror
    return Error{path + " is not a BPF object libbpf can open", err < 4000 ? err : 0};
  }
  if (auto s = o->load_and_register(false); !s) return s.error();
  return o;
}

Status CcObject::load_and_register(bool adopt) {
  std::vector<bpf_map*> ops;
  bpf_map* map;
  bpf_object__for_each_map(map, obj_) {
    if (bpf_map__type(map) != BPF_MAP_TYPE_STRUCT_OPS) continue;
    std::string type = struct_ops_type(obj_, map);
    if (type != "tcp_congestion_ops")
      return Error{origin_ + ": struct_ops map " + bpf_map__name(map) + " is a " + type +
                       ", not a tcp_congestion_ops",
                   0};
    ops.push_back(map);
  }
  if (ops.empty())
    return Error{origin_ + " holds no congestion control: no struct tcp_congestion_ops in "
                           "SEC(\".struct_ops\") (libbpf 1.1 skips SEC(\".struct_ops.link\"))",
                 0};
  // Registered through BPF links (Linux 6.4): the registration is the link
  // fd's, so it ends with hookerd even when hookerd is killed. (A plain
  // struct_ops map stays registered after its owner dies.) libbpf 1.1 has
  // no SEC(".struct_ops.link"): the flag is set here.
  for (bpf_map* m : ops) bpf_map__set_map_flags(m, bpf_map__map_flags(m) | kBpfFLink);
  if (int r = bpf_object__load(obj_)) {
    std::string why = verifier_reason(log_);
    // The whole log, for whoever debugs the object: the answer has its end.
    if (log_[0])
      log::error("the verifier's log of " + origin_ + ":\n" +
                 std::string(log_.data(), strnlen(log_.data(), log_.size())));
    return Error{"the kernel refused to load " + origin_ +
                     (why.empty() ? "" : ": the verifier says: " + why),
                 why.empty() ? -r : 0};
  }
  log_.clear();
  log_.shrink_to_fit();
  for (bpf_map* m : ops) {
    // The name the kernel lists is the struct's .name, which libbpf 1.1
    // does not show: it is what appears in the list on registration.
    auto before = registered_ccs();
    // A BPF_F_LINK map: libbpf fills it with the programs (no registration
    // yet), and the link created on it registers it.
    bpf_link* filled = bpf_map__attach_struct_ops(m);
    if (!filled) return sys_error("fill the struct_ops map " + std::string(bpf_map__name(m)));
    std::unique_ptr<bpf_link, int (*)(bpf_link*)> filled_owned(filled, bpf_link__destroy);
    Fd l(bpf_link_create(bpf_map__fd(m), 0, kBpfStructOps, nullptr));
    if (!l.valid()) {
      int err = errno;
      if (err == EEXIST && adopt) {
        algos_.push_back({bpf_map__name(m), false});
        continue;
      }
      return Error{"the kernel refused to register " + std::string(bpf_map__name(m)) +
                       " of " + origin_ +
                       (err == EEXIST ? ": a congestion control of that name is registered "
                                        "already (tcp_available_congestion_control)"
                                      : ""),
                   err == EEXIST ? 0 : err};
    }
    links_.push_back(std::move(l));
    auto after = registered_ccs();
    std::string name = bpf_map__name(m);
    for (auto& n : after)
      if (std::find(before.begin(), before.end(), n) == before.end()) name = n;
    algos_.push_back({name, true});
  }
  if (links_.empty()) {
    // All used as they were: an unregistered copy kept loaded would still
    // be a struct_ops map in the kernel (bpftool struct_ops list).
    bpf_object__close(obj_);
    obj_ = nullptr;
  }
  return ok();
}

CcObject::~CcObject() {
  // Links first: the algorithms leave the kernel's list before their
  // programs can go.
  while (!links_.empty()) links_.pop_back();
  if (obj_) bpf_object__close(obj_);
}

}  // namespace hooker
