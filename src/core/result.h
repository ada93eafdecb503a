// Errors are values: what failed, with which object, and the errno saved at
// the failure site (STYLE: Katran's SystemError).
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace hooker {

struct Error {
  std::string what;  // a sentence a user can act on
  int err = 0;       // errno, 0 if none

  std::string message() const {
    return err ? what + ": " + std::strerror(err) : what;
  }
};

// errno captured at once, before anything else can overwrite it.
inline Error sys_error(std::string what) { return Error{std::move(what), errno}; }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Error e) : v_(std::move(e)) {}

  explicit operator bool() const { return v_.index() == 0; }
  T& operator*() { return std::get<0>(v_); }
  T* operator->() { return &std::get<0>(v_); }
  const Error& error() const { return std::get<1>(v_); }
  T take() { return std::move(std::get<0>(v_)); }

 private:
  std::variant<T, Error> v_;
};

struct Ok {};
using Status = Result<Ok>;
inline Status ok() { return Ok{}; }

}  // namespace hooker
