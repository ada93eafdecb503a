// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Test-only impairment of Hooker DATA datagrams, for tests/e2e/test_stream.py.
 *
 * `impair` (TC clsact, direct action, egress or ingress) counts Hooker DATA
 * datagrams (UDP to cfg.udp_port, magic "HK", type HK_WIRE_DATA) and, as
 * configured in the `cfg` map before it is attached:
 *   - drops the drop_nth one (1-based; 0: none),
 *   - duplicates every dup_every-th one (bpf_clone_redirect to the same
 *     interface, BPF_F_INGRESS if cfg.ingress; the clone is marked and let
 *     through untouched when it comes back),
 *   - steers delay_count packets, from the one holding the delay_nth datagram
 *     on, into the qdisc class delay_prio (skb->priority names an HTB class):
 *     with a slow class there they are held while later ones overtake them.
 * A GSO packet carrying several datagrams counts as gso_segs datagrams and is
 * dropped, duplicated or held whole; on the receiving host's ingress with GRO
 * off every packet is one datagram, so that is where single drops are exact.
 *
 * `observe` (TC clsact ingress) on the receiving host counts the DATA datagrams
 * that arrive and those that arrive late: below the highest byte offset already
 * seen for their token (reordered or duplicated on the way). hookerd's XDP runs
 * before TC ingress and passes valid datagrams on.
 *
 * Both return TC_ACT_UNSPEC for what they let through, so filters chain.
 */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "hooker_abi.h"

#define TC_ACT_UNSPEC (-1)
#define TC_ACT_SHOT 2
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_UDP 17
#define IMPAIR_MARK 0x1a7b0c0d /* our own clone: let it through */

struct impair_cfg {
	__u32 udp_port;    /* Hooker's UDP port (destination), host order */
	__u32 delay_prio;  /* skb->priority for held packets: HTB major:minor */
	__u64 drop_nth;
	__u64 dup_every;
	__u64 delay_nth;
	__u64 delay_count; /* packets (not datagrams) held */
	__u32 ingress;     /* attached on ingress: clones go back to ingress */
	__u32 pad;
};

struct impair_stats {
	__u64 data;        /* egress: DATA datagrams seen */
	__u64 dropped;
	__u64 duplicated;
	__u64 delayed;
	__u64 obs_data;    /* ingress: DATA datagrams seen */
	__u64 obs_late;    /* ingress: arrived below the highest offset seen */
	__u64 dropped_offset; /* the byte offset of the dropped datagram */
	__u64 obs_gso;     /* ingress skbs carrying more than one datagram */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct impair_cfg);
} cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct impair_stats);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);   /* receiver token */
	__type(value, __u64); /* highest end offset seen */
} seen SEC(".maps");

/* Offset of the UDP payload of a Hooker datagram to `port`, or -1. */
static __always_inline int hooker_payload(struct __sk_buff *skb, __u32 port)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct udphdr *udp;
	int off;

	if ((void *)(eth + 1) > end)
		return -1;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP)
			return -1;
		if (ip->frag_off & bpf_htons(0x3fff))
			return -1;
		off = sizeof(*eth) + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_UDP)
			return -1;
		off = sizeof(*eth) + sizeof(*ip6);
	} else {
		return -1;
	}
	if (off < 0 || off > 128)
		return -1;
	udp = data + off;
	if ((void *)(udp + 1) > end)
		return -1;
	if (port && udp->dest != bpf_htons(port))
		return -1;
	return off + sizeof(*udp);
}

/* Reads the Hooker header at `off`; 0 if it is a DATA datagram. */
static __always_inline int hooker_data(struct __sk_buff *skb, int off, struct hk_wire_hdr *h)
{
	if (bpf_skb_load_bytes(skb, off, h, sizeof(*h)) < 0)
		return -1;
	if (h->magic != bpf_htons(HK_WIRE_MAGIC) || h->type != HK_WIRE_DATA)
		return -1;
	return 0;
}

SEC("tc")
int impair(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct impair_cfg *c = bpf_map_lookup_elem(&cfg, &zero);
	struct impair_stats *st = bpf_map_lookup_elem(&stats, &zero);
	struct hk_wire_hdr h;
	__u64 segs, first, last;
	int off;

	if (!c || !st)
		return TC_ACT_UNSPEC;
	if (skb->mark == IMPAIR_MARK) {
		skb->mark = 0;
		return TC_ACT_UNSPEC;
	}
	off = hooker_payload(skb, c->udp_port);
	if (off < 0 || hooker_data(skb, off, &h) < 0)
		return TC_ACT_UNSPEC;
	segs = skb->gso_segs > 1 ? skb->gso_segs : 1;
	first = __sync_fetch_and_add(&st->data, segs) + 1;
	last = first + segs - 1;

	if (c->drop_nth && c->drop_nth >= first && c->drop_nth <= last) {
		__sync_fetch_and_add(&st->dropped, 1);
		st->dropped_offset = bpf_be64_to_cpu(h.offset);
		return TC_ACT_SHOT;
	}
	if (c->dup_every && (last / c->dup_every) != ((first - 1) / c->dup_every)) {
		__u32 mark = skb->mark;

		skb->mark = IMPAIR_MARK;
		if (bpf_clone_redirect(skb, skb->ifindex, c->ingress ? BPF_F_INGRESS : 0) == 0)
			__sync_fetch_and_add(&st->duplicated, 1);
		skb->mark = mark;
	}
	if (c->delay_nth && last >= c->delay_nth && st->delayed < c->delay_count) {
		skb->priority = c->delay_prio;
		__sync_fetch_and_add(&st->delayed, 1);
	}
	return TC_ACT_UNSPEC;
}

SEC("tc")
int observe(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct impair_cfg *c = bpf_map_lookup_elem(&cfg, &zero);
	struct impair_stats *st = bpf_map_lookup_elem(&stats, &zero);
	struct hk_wire_hdr h;
	__u64 token, offset, endoff, *max;
	int off;

	if (!c || !st)
		return TC_ACT_UNSPEC;
	off = hooker_payload(skb, c->udp_port);
	if (off < 0 || hooker_data(skb, off, &h) < 0)
		return TC_ACT_UNSPEC;
	__sync_fetch_and_add(&st->obs_data, 1);
	if (skb->gso_segs > 1)
		__sync_fetch_and_add(&st->obs_gso, 1);
	token = h.token;
	offset = bpf_be64_to_cpu(h.offset);
	endoff = offset + bpf_ntohs(h.len);
	max = bpf_map_lookup_elem(&seen, &token);
	if (!max) {
		bpf_map_update_elem(&seen, &token, &endoff, BPF_NOEXIST);
		return TC_ACT_UNSPEC;
	}
	if (offset < *max)
		__sync_fetch_and_add(&st->obs_late, 1);
	else
		*max = endoff;
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
