// The kernel ABI seen from C++: hooker_abi.h plus a size check on every
// struct, so a change on one side that the other does not match fails the
// build instead of corrupting a map.
#pragma once

#include <linux/types.h>

extern "C" {
#include "hooker_abi.h"
}

static_assert(sizeof(hk_tcp_opt) == HK_OPT_LEN);
static_assert(sizeof(hk_wire_hdr) == 32);
static_assert(sizeof(hk_flow) == 40);
static_assert(sizeof(hk_sk) == 72);
static_assert(sizeof(hk_token) == 16);
static_assert(sizeof(hk_event) == 96);
static_assert(sizeof(hk_lanes) == 96);
static_assert(sizeof(hk_send) == 32);
static_assert(sizeof(hk_port_rule) == 4 + HK_CC_NAME_MAX);
static_assert(sizeof(hk_rule) == 104);
static_assert(sizeof(hk_rules) == 16 + 104 * HK_MAX_RULES);
static_assert(sizeof(hk_listener_key) == 16);
static_assert(sizeof(hk_listener_cg) == 16 + 8 * (HK_CG_MAX_LEVEL + 1));
static_assert(sizeof(hk_peer_key) == 20);
static_assert(sizeof(hk_udp_blocked) == 24);
