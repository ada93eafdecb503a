// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* A congestion control the verifier refuses: it writes snd_una, which a
 * BPF congestion control may not touch. `hookerctl deploy tcp-cc --object
 * build/bpf/broken_cc.bpf.o` must fail with the verifier's reason and
 * change nothing (tests/e2e/test_tcp_cc.py). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("struct_ops/hk_broken_ssthresh")
__u32 BPF_PROG(hk_broken_ssthresh, struct sock *sk)
{
	return 2;
}

SEC("struct_ops/hk_broken_cong_avoid")
void BPF_PROG(hk_broken_cong_avoid, struct sock *sk, __u32 ack, __u32 acked)
{
	((struct tcp_sock *)sk)->snd_una = ack; /* forbidden */
}

SEC("struct_ops/hk_broken_undo_cwnd")
__u32 BPF_PROG(hk_broken_undo_cwnd, struct sock *sk)
{
	return ((struct tcp_sock *)sk)->snd_cwnd;
}

SEC(".struct_ops")
struct tcp_congestion_ops hk_broken_cc = {
	.ssthresh = (void *)hk_broken_ssthresh,
	.cong_avoid = (void *)hk_broken_cong_avoid,
	.undo_cwnd = (void *)hk_broken_undo_cwnd,
	.name = "hk_broken_cc",
};

char _license[] SEC("license") = "GPL";
