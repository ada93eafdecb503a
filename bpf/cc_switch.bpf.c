// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Moves live TCP sockets off congestion controls that tcp-cc unregisters.
 *
 * Unregistering a struct_ops congestion control only takes its name off the
 * kernel's list: every socket that uses it holds a reference on it, and
 * keeps running its BPF programs (and keeps the struct_ops map alive) until
 * it closes. hookerd's `undeploy tcp-cc` promises that those connections go
 * on with the default congestion control and that nothing of the algorithm
 * stays in the kernel, so after unregistering it runs this TCP iterator over
 * every network namespace: each socket whose algorithm is named in
 * `leaving` gets its namespace's default with bpf_setsockopt, which drops
 * its reference. Only a TCP iterator may call bpf_setsockopt on a
 * socket it did not get from its own hook (it holds the socket's lock).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "hooker_abi.h"

#define SOL_TCP 6
#define TCP_CONGESTION 13

struct cc_name {
	char name[HK_CC_NAME_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct cc_name);
	__type(value, __u8);
} leaving SEC(".maps");

/* Set by hookerd before it runs the iterator (for a socket whose
 * namespace's default is leaving too); counts read back after. */
char fallback[HK_CC_NAME_MAX] = {};
__u32 switched = 0, failed = 0;

SEC("iter/tcp")
int hk_cc_switch(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct cc_name cur = {}, def = {};
	struct tcp_sock *tp;

	if (!skc)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc); /* full sockets only: no timewait, no request */
	if (!tp)
		return 0;
	BPF_CORE_READ_INTO(&cur.name, tp, inet_conn.icsk_ca_ops, name);
	if (!bpf_map_lookup_elem(&leaving, &cur))
		return 0;
	/* The socket's namespace's default, unless it is leaving too. */
	BPF_CORE_READ_INTO(&def.name, tp, inet_conn.icsk_inet.sk.__sk_common.skc_net.net,
			   ipv4.tcp_congestion_control, name);
	if (!def.name[0] || bpf_map_lookup_elem(&leaving, &def))
		__builtin_memcpy(def.name, fallback, sizeof(def.name));
	if (bpf_setsockopt(tp, SOL_TCP, TCP_CONGESTION, def.name, sizeof(def.name)))
		__sync_fetch_and_add(&failed, 1);
	else
		__sync_fetch_and_add(&switched, 1);
	return 0;
}

char _license[] SEC("license") = "GPL";
