// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Test-only bit error on the wire, for tests/e2e/test_udplite_ebpf.py.
 *
 * `flip` (TC clsact egress, direct action) counts the UDP-Lite (IP protocol
 * 136) Hooker DATA datagrams to cfg.port and XORs cfg.mask into the byte at
 * cfg.at (from the UDP-Lite header's first byte) of the nth one. It fixes
 * no checksum: that is the point. Classic tc egress runs after tcx egress,
 * so it sees the datagrams hookerd's udplite program already made UDP-Lite.
 * Everything is passed on (TC_ACT_UNSPEC). */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "hooker_abi.h"

#define TC_ACT_UNSPEC (-1)
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_UDPLITE 136

struct flip_cfg {
	__u32 port; /* destination port, host order */
	__u32 at;   /* byte offset from the UDP-Lite header */
	__u64 nth;  /* 1-based; 0: none */
	__u32 mask;
	__u32 pad;
};

struct flip_stats {
	__u64 seen;    /* DATA datagrams to cfg.port */
	__u64 flipped;
	__u64 offset;  /* the stream offset of the one flipped */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flip_cfg);
} cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flip_stats);
} stats SEC(".maps");

SEC("tc")
int flip(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct flip_cfg *c = bpf_map_lookup_elem(&cfg, &zero);
	struct flip_stats *st = bpf_map_lookup_elem(&stats, &zero);
	struct udphdr uh;
	struct hk_wire_hdr h;
	__be16 proto;
	__u8 l4proto, b;
	__u32 l4;
	__u64 n;

	if (!c || !st || bpf_skb_load_bytes(skb, 12, &proto, 2))
		return TC_ACT_UNSPEC;
	if (proto == bpf_htons(ETH_P_IP)) {
		__u8 vihl;

		if (bpf_skb_load_bytes(skb, 14, &vihl, 1) ||
		    bpf_skb_load_bytes(skb, 14 + 9, &l4proto, 1))
			return TC_ACT_UNSPEC;
		l4 = 14 + (vihl & 0xf) * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, 14 + 6, &l4proto, 1))
			return TC_ACT_UNSPEC;
		l4 = 14 + 40;
	} else {
		return TC_ACT_UNSPEC;
	}
	if (l4proto != IPPROTO_UDPLITE || l4 > 14 + 60)
		return TC_ACT_UNSPEC;
	if (bpf_skb_load_bytes(skb, l4, &uh, sizeof(uh)) || uh.dest != bpf_htons(c->port))
		return TC_ACT_UNSPEC;
	if (bpf_skb_load_bytes(skb, l4 + sizeof(uh), &h, sizeof(h)) ||
	    h.magic != bpf_htons(HK_WIRE_MAGIC) || h.type != HK_WIRE_DATA)
		return TC_ACT_UNSPEC;
	n = __sync_fetch_and_add(&st->seen, 1) + 1;
	if (n != c->nth || c->at > 1500)
		return TC_ACT_UNSPEC;
	if (bpf_skb_load_bytes(skb, l4 + c->at, &b, 1))
		return TC_ACT_UNSPEC;
	b ^= (__u8)c->mask;
	if (bpf_skb_store_bytes(skb, l4 + c->at, &b, 1, 0))
		return TC_ACT_UNSPEC;
	st->flipped++;
	st->offset = bpf_be64_to_cpu(h.offset);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
