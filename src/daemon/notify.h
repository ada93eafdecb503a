// sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET (a path, or
// '@' for the abstract namespace), as systemd's Type=notify expects.
#pragma once

#include <string_view>

#include "core/result.h"

namespace hooker {

// Sends `state` ("READY=1", "STOPPING=1"); ok and nothing sent when
// NOTIFY_SOCKET is unset (not started by systemd).
Status notify_service_manager(std::string_view state);

}  // namespace hooker
