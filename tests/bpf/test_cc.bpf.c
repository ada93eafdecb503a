// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* A user's congestion control for the tests: `hookerctl deploy tcp-cc
 * --object build/bpf/test_cc.bpf.o` registers it as "hk_test_cc", and rules
 * may then name it (tests/e2e/test_tcp_cc.py). Reno, as simple as it gets:
 * one packet per ACKed packet in slow start, one per window after, half
 * the window on a loss. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("struct_ops/hk_test_ssthresh")
__u32 BPF_PROG(hk_test_ssthresh, struct sock *sk)
{
	__u32 half = ((struct tcp_sock *)sk)->snd_cwnd >> 1;

	return half > 2 ? half : 2;
}

SEC("struct_ops/hk_test_cong_avoid")
void BPF_PROG(hk_test_cong_avoid, struct sock *sk, __u32 ack, __u32 acked)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;

	if (tp->snd_cwnd < tp->snd_ssthresh) {
		tp->snd_cwnd += acked;
		return;
	}
	tp->snd_cwnd_cnt += acked;
	if (tp->snd_cwnd_cnt >= tp->snd_cwnd) {
		tp->snd_cwnd_cnt -= tp->snd_cwnd;
		if (tp->snd_cwnd < tp->snd_cwnd_clamp)
			tp->snd_cwnd++;
	}
}

SEC("struct_ops/hk_test_undo_cwnd")
__u32 BPF_PROG(hk_test_undo_cwnd, struct sock *sk)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;

	return tp->snd_cwnd > tp->prior_cwnd ? tp->snd_cwnd : tp->prior_cwnd;
}

SEC(".struct_ops")
struct tcp_congestion_ops hk_test_cc = {
	.ssthresh = (void *)hk_test_ssthresh,
	.cong_avoid = (void *)hk_test_cong_avoid,
	.undo_cwnd = (void *)hk_test_undo_cwnd,
	.name = "hk_test_cc",
};

char _license[] SEC("license") = "GPL";
