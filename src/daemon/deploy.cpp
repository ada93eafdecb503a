#include "daemon/deploy.h"

#include <sys/epoll.h>

#include <chrono>
#include <ctime>

#include <nlohmann/json.hpp>

namespace hooker {

namespace {
std::string utc_now() {
  char buf[32];
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// After a failed deployment (a port taken meanwhile), connections needing
// the mechanism stay TCP for this long before the next try.
constexpr auto kRetryAfter = std::chrono::seconds(1);
}  // namespace

Deployments::Deployments(MechHost& host, MechConfig cfg) : host_(host), cfg_(std::move(cfg)) {
  for (const MechKind& k : mechanisms()) {
    Entry e;
    e.kind = &k;
    all_.push_back(std::move(e));
  }
}

Deployments::Entry& Deployments::entry(const MechKind& k) {
  for (auto& e : all_)
    if (e.kind == &k) return e;
  std::abort();  // every MechKind comes from mechanisms()
}

const Deployments::Entry& Deployments::entry(const MechKind& k) const {
  return const_cast<Deployments*>(this)->entry(k);
}

Mechanism* Deployments::get(uint8_t id) const {
  for (auto& e : all_)
    if (e.kind->id == id) return e.m.get();
  return nullptr;
}

std::pair<int, Mechanism*> Deployments::polled(uint32_t i) const {
  return i < fds_.size() ? fds_[i] : std::pair<int, Mechanism*>{-1, nullptr};
}

void Deployments::want_writable(int fd, bool on) const {
  for (uint32_t i = 0; i < fds_.size(); i++) {
    if (fds_[i].first != fd) continue;
    epoll_event e{};
    e.events = on ? EPOLLIN | EPOLLOUT : EPOLLIN;
    e.data.u64 = tag_(i);
    epoll_ctl(epoll_, EPOLL_CTL_MOD, fd, &e);
  }
}

Status Deployments::poll(Entry& e) {
  for (int fd : e.m->fds()) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag_(static_cast<uint32_t>(fds_.size()));
    if (epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev) < 0)
      return sys_error(std::string("poll the sockets of ") + std::string(e.kind->name));
    fds_.emplace_back(fd, e.m.get());
  }
  return ok();
}

void Deployments::tell_kernel() {
  uint32_t set = 0;
  for (auto& e : all_)
    if (e.m) set |= HK_MECH_BIT(e.kind->id);
  if (kernel_) kernel_->set_deployed(set);
}

Status Deployments::connect(int epoll_fd, std::function<uint64_t(uint32_t)> tag,
                            Kernel& kernel) {
  epoll_ = epoll_fd;
  tag_ = std::move(tag);
  kernel_ = &kernel;
  announce_ = true;
  for (auto& e : all_)
    if (e.m)
      if (auto s = poll(e); !s) return s;
  tell_kernel();
  return ok();
}

Status Deployments::deploy(const MechKind& k, std::string trigger, const std::string& object) {
  Entry& e = entry(k);
  bool held_back = e.held_back;
  e.held_back = false;
  if (e.m && object.empty()) return ok();
  auto t0 = std::chrono::steady_clock::now();
  bool fresh = !e.m;
  if (fresh) {
    auto m = k.open(host_, cfg_);
    if (!m) {
      e.error = m.error().message();
      e.failed_at = std::chrono::steady_clock::now();
      return Error{"deploy " + std::string(k.name) + ": " + e.error, 0};
    }
    e.m = m.take();
    if (epoll_ >= 0)
      if (auto s = poll(e); !s) {
        unpoll(e.m.get());
        e.m.reset();
        e.error = s.error().message();
        return s;
      }
  }
  if (!object.empty())
    if (auto s = e.m->load_object(object); !s) {
      // The request failed, not the mechanism: as it was before it.
      if (fresh) {
        unpoll(e.m.get());
        e.m.reset();
      }
      e.held_back = held_back;
      return Error{"deploy " + std::string(k.name) + " --object " + object + ": " +
                       s.error().message(),
                   0};
    }
  tell_kernel();
  e.load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                  .count();
  e.deploys++;
  e.trigger = std::move(trigger);
  e.at = utc_now();
  e.error.clear();
  if (!announce_) return ok();  // at start: a failed start says one line only
  char line[512];
  snprintf(line, sizeof(line), "deployed %s%s%s in %.2f ms (%s)", std::string(k.name).c_str(),
           object.empty() ? "" : " --object ", object.c_str(), e.load_ms, e.trigger.c_str());
  host_.log(line);
  return ok();
}

void Deployments::unpoll(Mechanism* m) {
  for (auto& [fd, mech] : fds_)
    if (mech == m) {
      epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
      fd = -1, mech = nullptr;
    }
}

void Deployments::undeploy(const MechKind& k) {
  Entry& e = entry(k);
  e.held_back = true;
  if (!e.m) return;
  std::unique_ptr<Mechanism> m = std::move(e.m);
  tell_kernel();  // first: no new handshake names it
  m->flush();     // the resets of its connections leave
  unpoll(m.get());
  // Its connections were retired this turn and are freed at its end: the
  // mechanism outlives them.
  retired_.push_back(std::move(m));
  host_.log("undeployed " + std::string(k.name));
}

bool Deployments::retry_due(const MechKind& k) const {
  const Entry& e = entry(k);
  return e.error.empty() || std::chrono::steady_clock::now() - e.failed_at >= kRetryAfter;
}

Status Deployments::check(const MechKind& k) {
  if (entry(k).m) return ok();
  auto m = k.open(host_, cfg_);
  if (!m) return m.error();
  return ok();  // closed again: deployed when needed
}

void Deployments::reap() { retired_.clear(); }

nlohmann::json Deployments::json(const std::function<size_t(uint8_t)>& users) const {
  auto out = nlohmann::json::array();
  for (auto& e : all_) {
    const char* state = e.m ? "deployed" : e.held_back ? "undeployed" : "not deployed";
    nlohmann::json j = {
        {"name", e.kind->name},
        {"id", e.kind->id},
        {"reliable", e.kind->reliable},
        {"state", state},
        {"deployed", e.m != nullptr},
        {"connections", users(e.kind->id)},
        {"deploys", e.deploys},
        {"loaded", e.m ? nlohmann::json(e.m->loaded()) : nlohmann::json::array()},
    };
    if (e.deploys) {
      j["deployed_at"] = e.at;  // the last deployment's
      j["trigger"] = e.trigger;
      j["load_ms"] = e.load_ms;
    }
    if (!e.error.empty()) j["last_error"] = e.error;
    out.push_back(std::move(j));
  }
  return out;
}

}  // namespace hooker
