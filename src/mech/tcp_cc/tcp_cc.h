// tcp-cc: the connection stays TCP, with a congestion control of the rule's
// choosing (`8080=tcp-cc:hk_vegas`). hookerd deploys it by registering its
// built-in BPF algorithms (bpf/vegas.bpf.c) and any a user gives it
// (`hookerctl deploy tcp-cc --object FILE.bpf.o`); the sock_ops program sets
// the rule's algorithm on matching connections (bpf_setsockopt) while tcp-cc
// is deployed. It has no sockets and carries no connection: no handshake
// names it.
#pragma once

#include <string>
#include <vector>

#include "core/result.h"

namespace hooker {

// The algorithms tcp-cc registers when deployed, written here in BPF.
const std::vector<std::string>& tcp_cc_builtin();
// A name a tcp-cc rule may give: built in here, or registered in the
// kernel now (its own, or another deployed object's). The error lists them.
Status tcp_cc_known(const std::string& name);

}  // namespace hooker
