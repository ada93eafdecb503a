/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Maps shared by every Hooker BPF object. Each object declares them; hookerd
 * loads the redirector first and hands the same map fds to the others
 * (bpf_map__reuse_fd), so there is one instance of each. The hashes are not
 * preallocated: creating 65,536 elements up front cost hookerd's start a
 * millisecond or more per map, for tables that hold a few at a time. */
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
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct hk_token);
} tokens SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HK_MAX_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct hk_flow);
	__type(value, struct hk_fin_guard);
} fin_guards SEC(".maps");

/* At least as many as fin_guards holds (one more while one is being added):
 * the ingress program skips its lookup of each pure ACK while it is 0,
 * which is nearly always. Added to before an insert, taken from after a
 * delete, by the redirector and by hookerd (through an mmap). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u64);
} fin_guards_live SEC(".maps");

#endif
