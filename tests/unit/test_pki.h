// Certificates made at test time (GnuTLS), in a temporary directory that
// goes with the object: no key is committed.
#pragma once

#include <netinet/in.h>

#include <memory>
#include <string>

namespace hooker::testing {

class TestPki {
 public:
  struct Files {
    std::string cert, key;
  };
  // A new CA (its certificate in ca_file()).
  TestPki();
  ~TestPki();
  TestPki(const TestPki&) = delete;
  TestPki& operator=(const TestPki&) = delete;

  const std::string& ca_file() const { return ca_file_; }
  // A certificate signed by this CA naming `addr` (subjectAltName IP; an
  // IPv4-mapped address is named as IPv4).
  Files issue(const std::string& name, const in6_addr& addr);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string dir_, ca_file_;
};

}  // namespace hooker::testing
