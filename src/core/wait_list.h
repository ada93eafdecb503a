// The connections waiting for one thing, for either layer: the application
// side's (app/conn.h) and a mechanism's (mech/udp/conn.h). The membership is
// a bit on the connection, so one is in a list at most once and joining
// costs no search; a retired one never joins, and one retired while in the
// list is passed over by drain() and dropped by purge() before its memory
// goes (the owner's reap, at the end of the loop turn).
#pragma once

#include <vector>

namespace hooker {

// T has `bool retired` and `std::bitset<N> waiting`, indexed by Why.
template <class T, class Why>
class WaitList {
 public:
  explicit WaitList(Why why) : why_(why) {}
  Why why() const { return why_; }
  bool empty() const { return v_.empty(); }
  size_t size() const { return v_.size(); }

  void add(T& c) {
    if (c.retired || c.waiting[why_]) return;
    c.waiting.set(why_);
    v_.push_back(&c);
  }

  // Empties the list and calls f on each member still live. f may add a
  // connection back: it then waits for the next drain, once.
  template <class F>
  void drain(F&& f) {
    std::vector<T*> now;
    now.swap(v_);
    for (T* c : now) c->waiting.reset(why_);
    for (T* c : now)
      if (!c->retired) f(*c);
  }

  void purge() {
    std::erase_if(v_, [](const T* c) { return c->retired; });
  }

 private:
  Why why_;
  std::vector<T*> v_;
};

}  // namespace hooker
