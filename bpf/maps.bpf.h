/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Maps shared by every Hooker BPF object. Each object declares them; hookerd
 * loads the redirector first and hands the same map fds to the others
 * (bpf_map__reuse_fd), so there is one instance of each. */
#ifndef HOOKER_MAPS_BPF_H
#define HOOKER_MAPS_BPF_H

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HK_CNT__MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HK_MAX_SLOTS);
	__type(key, __u64);
	__type(value, struct hk_token);
} tokens SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HK_MAX_SLOTS);
	__type(key, struct hk_flow);
	__type(value, struct hk_fin_guard);
} fin_guards SEC(".maps");

#endif
