/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Each listener's cgroup (hk_listener_cg in hooker_abi.h), for the rules'
 * cgroup match on the server side. Written by the sock_ops listen callback
 * (redirector.bpf.c) and by the listener-following iterator for listeners
 * opened before their rule (listeners.bpf.c, which gets the redirector's
 * map through bpf_map__reuse_fd); read in the SYN-ACK callbacks, where
 * sock_ops has no socket to read a cgroup from. */
#ifndef HOOKER_LISTENER_CG_BPF_H
#define HOOKER_LISTENER_CG_BPF_H

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HK_MAX_LISTENERS);
	__type(key, struct hk_listener_key);
	__type(value, struct hk_listener_cg);
} listener_cgs SEC(".maps");

/* Where a record is made: 272 bytes on the stack would take the sock_ops
 * program past its 512-byte limit. Per CPU: a program is not preempted
 * by another on its CPU. Each object has its own. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hk_listener_cg);
} listener_scratch SEC(".maps");

/* The record of a listener in cgroup `cg`: its depth and the id of each
 * of its ancestors, read now, while the listener holds the cgroup. (Ids,
 * not the pointer: the cgroup may go, and a pointer kept in a map would
 * then name freed memory.) */
static __always_inline void hk_listener_record(const struct hk_listener_key *k,
					       struct cgroup *cg, __u64 cookie)
{
	struct hk_listener_cg *v;
	struct cgroup *anc;
	__u32 zero = 0;
	int level;

	v = bpf_map_lookup_elem(&listener_scratch, &zero);
	if (!cg || !v)
		return;
	level = BPF_CORE_READ(cg, level);
	v->cookie = cookie;
	v->level = level;
	/* Unrolled: constant offsets into v. */
#pragma unroll
	for (int i = 0; i <= HK_CG_MAX_LEVEL; i++) {
		if (i <= level) {
			anc = NULL;
			bpf_core_read(&anc, sizeof(anc), &cg->ancestors[i]);
			v->id[i] = anc ? BPF_CORE_READ(anc, kn, id) : 0;
		} else {
			v->id[i] = 0;
		}
	}
	bpf_map_update_elem(&listener_cgs, k, v, BPF_ANY);
}

#endif
