// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* TCP Vegas as a BPF congestion control (struct_ops tcp_congestion_ops),
 * registered by hookerd when a tcp-cc rule names it (`hk_vegas`). Written
 * from the algorithm's description (Brakmo and Peterson, "TCP Vegas: End to
 * End Congestion Avoidance on a Global Internet", IEEE JSAC 1995), not from
 * the kernel's tcp_vegas.c, which this kernel does not build.
 *
 * Vegas keeps the queue it builds at the bottleneck small instead of filling
 * it until a loss. Once per round trip it compares the rate the window would
 * give on an empty path (cwnd / base_rtt, base_rtt the smallest RTT ever
 * seen) with the rate it got (cwnd / rtt, rtt the smallest of the round), and
 * turns the difference into the packets it has sitting in queues:
 *     diff = cwnd * (rtt - base_rtt) / rtt.
 * Below ALPHA it adds a packet to the window, above BETA it takes one away,
 * between them it holds. In slow start it doubles as Reno does, but leaves
 * slow start as soon as diff passes GAMMA, with the window the path carries
 * without a queue. Losses are handled as Reno handles them (halving); a
 * round with too few RTT samples to judge is Reno's too.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define ALPHA 2 /* packets queued: below, grow */
#define BETA 4  /* above, shrink */
#define GAMMA 1 /* slow start ends above it */
#define MIN_SAMPLES 3 /* RTT samples a round needs to be judged */
#define NO_RTT 0x7fffffffu

/* Per-connection state, in the socket's icsk_ca_priv (104 bytes). */
struct vegas {
	__u32 base_rtt;    /* us: the smallest RTT seen, the path without queue */
	__u32 min_rtt;     /* us: the smallest RTT of this round */
	__u32 samples;     /* RTT samples in this round */
	__u32 round_end;   /* the round ends once this sequence is acknowledged */
	__u32 judging;     /* 0 during loss recovery: Reno decides */
};

static __always_inline struct tcp_sock *tcp_of(struct sock *sk)
{
	return (struct tcp_sock *)sk;
}

static __always_inline struct vegas *vegas_of(struct sock *sk)
{
	return (struct vegas *)((struct inet_connection_sock *)sk)->icsk_ca_priv;
}

static __always_inline int after(__u32 a, __u32 b)
{
	return (__s32)(b - a) < 0;
}

static __always_inline void new_round(struct vegas *v, struct tcp_sock *tp)
{
	v->round_end = tp->snd_nxt;
	v->min_rtt = NO_RTT;
	v->samples = 0;
}

/* Reno's growth: one packet per acknowledged packet below ssthresh, one
 * per window above it. */
static __always_inline void reno_grow(struct tcp_sock *tp, __u32 acked)
{
	__u32 cwnd = tp->snd_cwnd;

	if (cwnd < tp->snd_ssthresh) {
		cwnd += acked;
		if (cwnd > tp->snd_ssthresh)
			cwnd = tp->snd_ssthresh;
	} else {
		tp->snd_cwnd_cnt += acked;
		if (tp->snd_cwnd_cnt >= cwnd) {
			tp->snd_cwnd_cnt -= cwnd;
			cwnd++;
		}
	}
	if (cwnd > tp->snd_cwnd_clamp)
		cwnd = tp->snd_cwnd_clamp;
	tp->snd_cwnd = cwnd;
}

SEC("struct_ops/hk_vegas_init")
void BPF_PROG(hk_vegas_init, struct sock *sk)
{
	struct vegas *v = vegas_of(sk);

	v->base_rtt = NO_RTT;
	v->judging = 1;
	new_round(v, tcp_of(sk));
}

/* Every ACK that brings an RTT sample. */
SEC("struct_ops/hk_vegas_pkts_acked")
void BPF_PROG(hk_vegas_pkts_acked, struct sock *sk, const struct ack_sample *sample)
{
	struct vegas *v = vegas_of(sk);
	__s32 us = sample->rtt_us;
	__u32 rtt;

	if (us < 0)
		return; /* no sample (a retransmission was acknowledged) */
	rtt = (__u32)us + 1; /* never 0: it divides */
	if (rtt < v->base_rtt)
		v->base_rtt = rtt;
	if (rtt < v->min_rtt)
		v->min_rtt = rtt;
	v->samples++;
}

/* Loss recovery is Reno's; back in the open state, Vegas judges again from
 * a fresh round. */
SEC("struct_ops/hk_vegas_set_state")
void BPF_PROG(hk_vegas_set_state, struct sock *sk, __u8 new_state)
{
	struct vegas *v = vegas_of(sk);

	v->judging = new_state == TCP_CA_Open;
	if (v->judging)
		new_round(v, tcp_of(sk));
}

/* After an idle period the queue the last round saw is gone. */
SEC("struct_ops/hk_vegas_cwnd_event")
void BPF_PROG(hk_vegas_cwnd_event, struct sock *sk, enum tcp_ca_event ev)
{
	if (ev == CA_EVENT_CWND_RESTART || ev == CA_EVENT_TX_START)
		new_round(vegas_of(sk), tcp_of(sk));
}

SEC("struct_ops/hk_vegas_cong_avoid")
void BPF_PROG(hk_vegas_cong_avoid, struct sock *sk, __u32 ack, __u32 acked)
{
	struct tcp_sock *tp = tcp_of(sk);
	struct vegas *v = vegas_of(sk);
	__u64 cwnd, rtt, base, diff, target;

	if (!v->judging) {
		reno_grow(tp, acked);
		return;
	}
	if (!after(ack, v->round_end)) {
		/* Mid-round: slow start goes on, congestion avoidance waits
		 * for the round's verdict. */
		if (tp->snd_cwnd < tp->snd_ssthresh)
			reno_grow(tp, acked);
		return;
	}
	if (v->samples < MIN_SAMPLES || v->min_rtt == NO_RTT) {
		/* Too few samples (a small window): judging would be noise. */
		reno_grow(tp, acked);
		new_round(v, tp);
		return;
	}
	cwnd = tp->snd_cwnd;
	rtt = v->min_rtt;
	base = v->base_rtt;
	/* Packets this connection keeps in queues: (expected - actual) * base. */
	diff = rtt > base ? cwnd * (rtt - base) / rtt : 0;
	if (tp->snd_cwnd < tp->snd_ssthresh) {
		if (diff > GAMMA) {
			/* A queue is building: leave slow start with the window
			 * the path holds without it, plus one. */
			target = cwnd * base / rtt + 1;
			if (target < cwnd)
				cwnd = target;
			tp->snd_ssthresh = cwnd > 2 ? cwnd - 1 : 2;
		} else {
			reno_grow(tp, acked);
			cwnd = tp->snd_cwnd;
		}
	} else if (diff > BETA) {
		cwnd--;
	} else if (diff < ALPHA) {
		cwnd++;
	}
	if (cwnd < 2)
		cwnd = 2;
	if (cwnd > tp->snd_cwnd_clamp)
		cwnd = tp->snd_cwnd_clamp;
	tp->snd_cwnd = cwnd;
	new_round(v, tp);
}

/* On a loss: Reno's halving. */
SEC("struct_ops/hk_vegas_ssthresh")
__u32 BPF_PROG(hk_vegas_ssthresh, struct sock *sk)
{
	__u32 half = tcp_of(sk)->snd_cwnd >> 1;

	return half > 2 ? half : 2;
}

/* A loss that was not one (spurious retransmission): the window before it. */
SEC("struct_ops/hk_vegas_undo_cwnd")
__u32 BPF_PROG(hk_vegas_undo_cwnd, struct sock *sk)
{
	struct tcp_sock *tp = tcp_of(sk);

	return tp->snd_cwnd > tp->prior_cwnd ? tp->snd_cwnd : tp->prior_cwnd;
}

SEC(".struct_ops")
struct tcp_congestion_ops hk_vegas = {
	.init = (void *)hk_vegas_init,
	.ssthresh = (void *)hk_vegas_ssthresh,
	.cong_avoid = (void *)hk_vegas_cong_avoid,
	.set_state = (void *)hk_vegas_set_state,
	.cwnd_event = (void *)hk_vegas_cwnd_event,
	.pkts_acked = (void *)hk_vegas_pkts_acked,
	.undo_cwnd = (void *)hk_vegas_undo_cwnd,
	.name = "hk_vegas",
};

char _license[] SEC("license") = "GPL";
