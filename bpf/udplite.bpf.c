// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The udplite mechanism made by BPF (hookerd --udplite-impl ebpf), for
 * kernels without UDP-Lite, or to keep it out of the kernel.
 *
 * hookerd's socket for it is plain UDP on an internal port, with GSO, GRO
 * and UDP checksums off, so each of its datagrams leaves as one packet with
 * checksum 0 and nothing left for the stack or the device to fill in. On
 * the interfaces, two tcx programs make the wire UDP-Lite (RFC 3828):
 *
 *   hk_lite_egress: UDP from the internal port becomes UDP-Lite from --port
 *     (the port the TCP option advertised): IP protocol 17 -> 136, the
 *     length field -> the checksum coverage (the UDP-Lite and frame headers,
 *     or what the connection's rule says: lite_coverage), the checksum over
 *     the pseudo-header and the covered bytes.
 *   hk_lite_ingress: UDP-Lite to --port is checked (coverage, checksum),
 *     the bad dropped and counted, the good made UDP to the internal port
 *     (length field = length, checksum 0, which the socket accepts). tcx
 *     ingress runs before the IP layer dispatches protocol 136: a kernel
 *     without UDP-Lite never sees it as such.
 *
 * Everything else is "next": other programs on the interface (hookerd's
 * ingress among them) see it untouched. The object is loaded only while
 * the mechanism is deployed (src/mech/udplite/lite_bpf.cpp). */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "udplite_abi.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_UDP 17
#define TCX_NEXT -1 /* TC_ACT_UNSPEC: the next program, then the stack */
#define TCX_DROP 2  /* TC_ACT_SHOT */
#define BPF_F_RECOMPUTE_CSUM 1

const volatile __u16 hk_port = 0;       /* --port: UDP-Lite on the wire */
const volatile __u16 hk_inner_port = 0; /* hookerd's internal UDP socket */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HK_LITE__MAX);
	__type(key, __u32);
	__type(value, __u64);
} lite_counters SEC(".maps");

/* Connections whose rule covers more than the headers (udplite:cov=N), by
 * the receiver's token as their frames carry it (network order); hookerd
 * adds one as the connection opens and removes it as it ends. Allocated as
 * filled: most connections take the default and have no entry. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HK_LITE_COVERED_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, __u16);
} lite_coverage SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&lite_counters, &idx);

	if (v)
		*v += 1;
}

static __always_inline int drop(__u32 reason)
{
	count(reason);
	return TCX_DROP;
}

/* Where a datagram's headers are, as offsets from skb->data (the MAC
 * header, on both hooks). */
struct where {
	__u32 ip, l4;
	__u32 l4_len; /* the IP payload: UDP(-Lite) header and data */
	__u8 v6, frag;
};

/* An unfragmented or fragmented IPv4/IPv6 packet whose next header is
 * `proto`, its IP headers in the linear part (always so for a packet the
 * local stack built; on ingress, pulled in first). -1: not one. */
static __always_inline int locate(struct __sk_buff *skb, __u8 proto, struct where *w)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return -1;
	w->ip = sizeof(*eth);
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		__u32 hl, tot;

		if ((void *)(ip + 1) > end || ip->protocol != proto || ip->ihl < 5)
			return -1;
		hl = ip->ihl * 4;
		tot = bpf_ntohs(ip->tot_len);
		if (tot < hl)
			return -1;
		w->v6 = 0;
		w->frag = (ip->frag_off & bpf_htons(0x3fff)) != 0;
		w->l4 = sizeof(*eth) + hl;
		w->l4_len = tot - hl;
		return 0;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		/* A fragment's next header is 44, not `proto`: left alone. */
		if ((void *)(ip6 + 1) > end || ip6->nexthdr != proto)
			return -1;
		w->v6 = 1;
		w->frag = 0;
		w->l4 = sizeof(*eth) + sizeof(*ip6);
		w->l4_len = bpf_ntohs(ip6->payload_len);
		return 0;
	}
	return -1;
}

/* The checksum sum of the pseudo-header (RFC 3828 3.1: as UDP's, with
 * protocol 136 and the IP payload's length, not the coverage), or < 0. */
static __always_inline __s64 pseudo_sum(struct __sk_buff *skb, const struct where *w)
{
	if (!w->v6) {
		struct {
			__be32 saddr, daddr;
			__u8 zero, proto;
			__be16 len;
		} ph = {.proto = HK_LITE_PROTO, .len = bpf_htons(w->l4_len)};

		if (bpf_skb_load_bytes(skb, w->ip + offsetof(struct iphdr, saddr), &ph, 8))
			return -1;
		return bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	}
	struct {
		__u8 addrs[32];
		__be32 len;
		__u8 zero[3], proto;
	} ph6 = {.len = bpf_htonl(w->l4_len), .proto = HK_LITE_PROTO};

	if (bpf_skb_load_bytes(skb, w->ip + offsetof(struct ipv6hdr, saddr), ph6.addrs, 32))
		return -1;
	return bpf_csum_diff(NULL, 0, (__be32 *)&ph6, sizeof(ph6), 0);
}

static __always_inline __u16 fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* Sets the IP protocol (IPv4, its header checksum updated incrementally,
 * RFC 1624) or next header (IPv6), and the 8-byte L4 header. Stores with
 * BPF_F_RECOMPUTE_CSUM keep a CHECKSUM_COMPLETE skb's sum right on
 * ingress (a no-op on the checksum-less egress). 0, or < 0. */
static __always_inline int rewrite(struct __sk_buff *skb, const struct where *w, __u8 proto,
				   const struct udphdr *h)
{
	if (!w->v6) {
		/* ttl, protocol, header checksum: one 4-byte store. */
		__u8 b[4];
		__u16 old_word, new_word, check;
		__u32 s;

		if (bpf_skb_load_bytes(skb, w->ip + offsetof(struct iphdr, ttl), b, 4))
			return -1;
		__builtin_memcpy(&old_word, b, 2);
		b[1] = proto;
		__builtin_memcpy(&new_word, b, 2);
		__builtin_memcpy(&check, b + 2, 2);
		s = (__u16)~check + (__u16)~old_word + new_word;
		check = ~fold(s);
		__builtin_memcpy(b + 2, &check, 2);
		if (bpf_skb_store_bytes(skb, w->ip + offsetof(struct iphdr, ttl), b, 4,
					BPF_F_RECOMPUTE_CSUM))
			return -1;
	} else if (bpf_skb_store_bytes(skb, w->ip + offsetof(struct ipv6hdr, nexthdr), &proto,
				       1, BPF_F_RECOMPUTE_CSUM)) {
		return -1;
	}
	return bpf_skb_store_bytes(skb, w->l4, h, sizeof(*h), BPF_F_RECOMPUTE_CSUM);
}

/* Covered bytes summed per call, and calls: up to 1536 bytes, all of a
 * datagram in a 1500-byte frame, are checked; more (jumbo frames covered
 * whole) is dropped and counted. The verifier walks every iteration at each
 * deployment: 36 for 9 KB cost 20 ms more of it; Hooker covers 40 unless a
 * rule says more, 1440 at most (a whole datagram). */
#define CHUNK 256
#define MAX_CHUNKS 6

/* Sum of `cov` bytes from `off` (the L4 header), the last word padded
 * with zeros as RFC 1071 pads an odd byte, on top of `seed`; < 0 on error. */
static __always_inline __s64 sum_covered(struct __sk_buff *skb, __u32 off, __u32 cov,
					 __s64 seed)
{
	__u8 buf[CHUNK];
	__s64 sum = seed;

	for (int i = 0; i < MAX_CHUNKS; i++) {
		__u32 at = i * CHUNK, n, len, words;

		if (at >= cov)
			break;
		n = cov - at;
		if (n > CHUNK)
			n = CHUNK;
		/* In [1, CHUNK] in a form the verifier can follow. */
		len = ((n - 1) & (CHUNK - 1)) + 1;
		words = (len + 3) & ~3u;
		__builtin_memset(buf, 0, sizeof(buf));
		if (bpf_skb_load_bytes(skb, off + at, buf, len))
			return -1;
		if (words > CHUNK)
			return -1;
		sum = bpf_csum_diff(NULL, 0, (__be32 *)buf, words, (__u32)sum);
		if (sum < 0)
			return -1;
	}
	return sum;
}

SEC("tc")
int hk_lite_egress(struct __sk_buff *skb)
{
	struct where w;
	__u8 hdrs[HK_LITE_COVERAGE];
	struct udphdr *h = (void *)hdrs;
	__u64 token;
	__u16 *rule, check;
	__u32 cov = HK_LITE_COVERAGE;
	__s64 sum;

	if (locate(skb, IPPROTO_UDP, &w) || bpf_skb_load_bytes(skb, w.l4, h, sizeof(*h)) ||
	    h->source != bpf_htons(hk_inner_port))
		return TCX_NEXT; /* not hookerd's udplite socket */
	/* From here on it is ours: it leaves as UDP-Lite or not at all. */
	if (w.frag)
		return drop(HK_LITE_OUT_FRAGMENT);
	/* A GSO packet would be segmented after this hook, every segment
	 * carrying this header: the socket has GSO off, so this never is. */
	if (skb->gso_segs > 1)
		return drop(HK_LITE_OUT_GSO);
	if (w.l4_len < HK_LITE_COVERAGE ||
	    bpf_skb_load_bytes(skb, w.l4, hdrs, HK_LITE_COVERAGE))
		return drop(HK_LITE_OUT_SHORT);
	__builtin_memcpy(&token, hdrs + HK_LITE_HEADER + HK_LITE_TOKEN_AT, sizeof(token));
	rule = bpf_map_lookup_elem(&lite_coverage, &token);
	if (rule && *rule > HK_LITE_COVERAGE)
		cov = *rule < w.l4_len ? *rule : w.l4_len; /* all of it: the length, as the kernel */
	h->source = bpf_htons(hk_port);
	h->len = bpf_htons(cov); /* UDP-Lite: the coverage */
	h->check = 0;
	sum = pseudo_sum(skb, &w);
	if (sum < 0)
		return drop(HK_LITE_OUT_SHORT);
	if (cov == HK_LITE_COVERAGE) {
		/* The headers only: summed from here, stored with them. */
		sum = bpf_csum_diff(NULL, 0, (__be32 *)hdrs, HK_LITE_COVERAGE, (__u32)sum);
		if (sum < 0)
			return drop(HK_LITE_OUT_SHORT);
		check = ~fold((__u64)sum);
		h->check = check ? check : 0xffff; /* 0 would mean "none": RFC 3828 3.1 */
		if (rewrite(skb, &w, HK_LITE_PROTO, h))
			return drop(HK_LITE_OUT_SHORT);
	} else {
		/* More: the new header goes in first, then the sum reads it
		 * and the payload from the packet, then the checksum. */
		if (rewrite(skb, &w, HK_LITE_PROTO, h))
			return drop(HK_LITE_OUT_SHORT);
		sum = sum_covered(skb, w.l4, cov, sum);
		if (sum < 0)
			return drop(HK_LITE_OUT_SHORT);
		check = ~fold((__u64)sum);
		check = check ? check : 0xffff;
		if (bpf_skb_store_bytes(skb, w.l4 + offsetof(struct udphdr, check), &check,
					sizeof(check), BPF_F_RECOMPUTE_CSUM))
			return drop(HK_LITE_OUT_SHORT);
	}
	count(HK_LITE_OUT);
	return TCX_NEXT;
}

SEC("tc")
int hk_lite_ingress(struct __sk_buff *skb)
{
	struct where w;
	struct udphdr h;
	__u32 cov;
	__s64 sum;

	/* The IP header may sit in a page on a real NIC: pull it in, for
	 * UDP-Lite only (cheap, and most packets are not). */
	if (locate(skb, HK_LITE_PROTO, &w)) {
		if (skb->len <= skb->data_end - skb->data)
			return TCX_NEXT;
		bpf_skb_pull_data(skb, 14 + 40);
		if (locate(skb, HK_LITE_PROTO, &w))
			return TCX_NEXT;
	}
	if (bpf_skb_load_bytes(skb, w.l4, &h, sizeof(h)) || h.dest != bpf_htons(hk_port))
		return TCX_NEXT; /* not to hookerd's port: the stack's business */
	if (w.frag)
		return drop(HK_LITE_IN_FRAGMENT);
	if (w.l4_len < sizeof(h) || w.l4 + w.l4_len > skb->len)
		return drop(HK_LITE_IN_SHORT);
	/* RFC 3828 3.1: 0 covers the whole datagram; 1..7 and more than the
	 * datagram are invalid. */
	cov = bpf_ntohs(h.len);
	if (cov == 0)
		cov = w.l4_len;
	if (cov < sizeof(h) || cov > w.l4_len)
		return drop(HK_LITE_IN_BAD_COVERAGE);
	/* The frame header (token, offset) must be checked, as the kernel's
	 * UDPLITE_RECV_CSCOV makes the kernel implementation drop it. */
	if (cov < HK_LITE_COVERAGE)
		return drop(HK_LITE_IN_LOW_COVERAGE);
	if (cov > CHUNK * MAX_CHUNKS)
		return drop(HK_LITE_IN_TOO_LONG);
	/* A zero checksum is no checksum, which UDP-Lite does not have. */
	if (h.check == 0)
		return drop(HK_LITE_IN_BAD_CHECKSUM);
	sum = pseudo_sum(skb, &w);
	if (sum >= 0)
		sum = sum_covered(skb, w.l4, cov, sum);
	if (sum < 0 || fold((__u64)sum) != 0xffff)
		return drop(HK_LITE_IN_BAD_CHECKSUM);
	/* Good: plain UDP to the internal socket, whole length, no checksum
	 * (the socket takes zero on IPv6 too: UDP_NO_CHECK6_RX). */
	h.dest = bpf_htons(hk_inner_port);
	h.len = bpf_htons(w.l4_len);
	h.check = 0;
	if (rewrite(skb, &w, IPPROTO_UDP, &h))
		return drop(HK_LITE_IN_SHORT);
	count(HK_LITE_IN);
	return TCX_NEXT;
}

char _license[] SEC("license") = "GPL";
