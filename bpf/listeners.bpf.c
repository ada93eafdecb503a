// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Makes listeners that were open before a port entered the policy (or
 * before hookerd started) negotiate like new ones.
 *
 * The sock_ops program turns on a listener's header-option callbacks and
 * keeps its SYNs (TCP_SAVE_SYN) in the listen callback, and only for a port
 * in the policy then: a listener on any other port costs nothing. A listener
 * opened earlier never passes there again, so hookerd runs this TCP
 * iterator at start and on each `policy add`, with the ports in `follow`:
 * it does the same for their listeners in the served cgroup. Only a TCP
 * iterator may call bpf_setsockopt on a socket it did not get from its own
 * hook (it holds the socket's lock), and TCP_BPF_SOCK_OPS_CB_FLAGS is
 * accepted there since Linux 6.13. It also records each such listener's
 * cgroup (listener_cg.bpf.h), as the listen callback does for new ones.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "hooker_abi.h"
#include "listener_cg.bpf.h"

#define SOL_TCP 6
#define TCP_SAVE_SYN 27
#define TCP_LISTEN 10
#define HK_MAX_CGROUP_DEPTH 32

/* The served cgroup (its kernfs id): sockets of its subtree only. */
const volatile __u64 hk_cgroup_id = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HK_MAX_PORTS);
	__type(key, __u16);
	__type(value, __u8);
} follow SEC(".maps");

/* One record per listener changed or refused, read by hookerd. */
struct hk_followed {
	__u16 port;
	__s16 err; /* 0, or the negative errno of bpf_setsockopt */
};

static bool in_served_cgroup(struct sock *sk)
{
	struct cgroup *cg = BPF_CORE_READ(sk, sk_cgrp_data.cgroup), *anc;
	int level = BPF_CORE_READ(cg, level);

	/* The socket's cgroup or one of its ancestors is the served one. */
	for (int i = 0; i < HK_MAX_CGROUP_DEPTH; i++) {
		if (i > level)
			return false;
		anc = NULL;
		bpf_core_read(&anc, sizeof(anc), &cg->ancestors[i]);
		if (anc && BPF_CORE_READ(anc, kn, id) == hk_cgroup_id)
			return true;
	}
	return false;
}

SEC("iter/tcp")
int hk_follow_listeners(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct hk_followed rec = {};
	struct hk_listener_key k = {};
	struct tcp_sock *tp;
	int one = 1, flags;
	__u16 port;

	if (!skc || skc->skc_state != TCP_LISTEN)
		return 0;
	port = skc->skc_num;
	if (!bpf_map_lookup_elem(&follow, &port))
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp || !in_served_cgroup((struct sock *)tp))
		return 0;
	rec.port = port;
	/* The state callback forgets the listener's cgroup when it closes. */
	flags = tp->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG |
		BPF_SOCK_OPS_STATE_CB_FLAG;
	rec.err = bpf_setsockopt(tp, SOL_TCP, TCP_SAVE_SYN, &one, sizeof(one));
	if (!rec.err)
		rec.err = bpf_setsockopt(tp, SOL_TCP, TCP_BPF_SOCK_OPS_CB_FLAGS, &flags,
					 sizeof(flags));
	if (!rec.err) {
		k.netns = BPF_CORE_READ(skc, skc_net.net, net_cookie);
		k.port = port;
		k.family = skc->skc_family;
		hk_listener_record(&k, BPF_CORE_READ((struct sock *)tp, sk_cgrp_data.cgroup),
				   bpf_get_socket_cookie(tp));
	}
	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}

char _license[] SEC("license") = "GPL";
