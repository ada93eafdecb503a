// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Wakes application writers that the slow lane refused (hk_lanes).
 *
 * A non-blocking writer that got EAGAIN waits for EPOLLOUT on its own
 * socket. That socket always has room: its bytes went to the slot's socket,
 * which was full. So the kernel never wakes it, and a writer on
 * edge-triggered epoll (nginx) would wait for ever. hookerd runs this TCP
 * iterator when a slot has room again, with the tokens of the connections
 * to wake in `wake`: setting TCP_NOTSENT_LOWAT to the value it has calls
 * the socket's write-space callback, which wakes every poller with EPOLLOUT
 * and changes nothing else. Only a TCP iterator may call bpf_setsockopt on
 * a socket it did not get from its own hook (the iterator holds its lock).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "hooker_abi.h"

#define SOL_TCP 6
#define TCP_NOTSENT_LOWAT 25

/* The redirector's: hookerd hands its fd over (bpf_map__reuse_fd). */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct hk_sk);
} sk_state SEC(".maps");

/* Tokens of the connections whose writers to wake; an entry is deleted
 * once its socket was woken, so what is left names a failure. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HK_MAX_SLOTS);
	__type(key, __u64);
	__type(value, __u8);
} wake SEC(".maps");

SEC("iter/tcp")
int hk_wake_writers(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct tcp_sock *tp;
	struct hk_sk *st;
	int lowat;

	if (!skc)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	st = bpf_sk_storage_get(&sk_state, tp, 0, 0);
	if (!st || st->state != HK_SK_MOVED || !bpf_map_lookup_elem(&wake, &st->token))
		return 0;
	lowat = tp->notsent_lowat;
	if (bpf_setsockopt(tp, SOL_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof(lowat)) == 0)
		bpf_map_delete_elem(&wake, &st->token);
	return 0;
}

char _license[] SEC("license") = "GPL";
