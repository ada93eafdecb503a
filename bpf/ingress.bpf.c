// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The paper's hooker_ingress: XDP on the interfaces Hooker traffic arrives
 * on. It sees each Hooker datagram before the stack does, drops the
 * malformed ones and those whose token names no live connection (each
 * reason counted), holds back the ACK of a moved application's FIN while it
 * still waits for the peer's bytes (see hk_fin_guard), and passes
 * everything else untouched. The same checks also run as a TC (tcx)
 * ingress program, for interfaces where XDP in the driver costs more than
 * it saves (veth: see ingress_hook_for in src/bpf/kernel.h). */
/* Only UAPI context structs and packet headers are read here, whose layout
 * is ABI, so no CO-RE relocation is needed; without them libbpf does not
 * parse the kernel's BTF at load. */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "hooker_abi.h"
#include "maps.bpf.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define AF_INET 2
#define AF_INET6 10
#define TCX_NEXT -1 /* TC_ACT_UNSPEC: let the next program have it */
#define TCX_DROP 2  /* TC_ACT_SHOT */

const volatile __u16 hk_udp_port = 0;

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		*v += 1;
}

/* A verdict of either hook: PASS or DROP, mapped to XDP or TC codes by
 * the entry points; or MORE: a header it needs is past the linear part of a
 * TC packet (the entry point pulls it in and asks again). */
#define PASS 0
#define DROP 1
#define MORE 2

static __always_inline int drop(__u32 reason)
{
	count(reason);
	return DROP;
}

/* The L4 header and the tuple from the receiving socket's side (local =
 * destination). NULL for anything but unfragmented TCP/UDP over IPv4/IPv6. */
static __always_inline void *l4(void *data, void *end, struct hk_flow *f, __u8 *proto,
				__u32 *l4_len)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return NULL;
	__builtin_memset(f, 0, sizeof(*f));
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end)
			return NULL;
		/* Fragments carry no (or a partial) header: leave them to
		 * the stack, which reassembles before anyone reads. */
		if (ip->frag_off & bpf_htons(0x3fff))
			return NULL;
		f->family = AF_INET;
		f->laddr[0] = ip->daddr;
		f->raddr[0] = ip->saddr;
		*proto = ip->protocol;
		*l4_len = bpf_ntohs(ip->tot_len) - ip->ihl * 4;
		return (void *)ip + ip->ihl * 4;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return NULL;
		f->family = AF_INET6;
		__builtin_memcpy(f->laddr, &ip6->daddr, 16);
		__builtin_memcpy(f->raddr, &ip6->saddr, 16);
		*proto = ip6->nexthdr;
		*l4_len = bpf_ntohs(ip6->payload_len);
		return ip6 + 1;
	}
	return NULL;
}

/* `beyond`: bytes of the packet past `end`, in pages (TC only). */
static __always_inline int on_tcp(struct tcphdr *th, void *end, __u32 beyond,
				  struct hk_flow *f, __u32 l4_len)
{
	struct hk_fin_guard *g;
	__u32 zero = 0;
	__u64 *live;

	if ((void *)(th + 1) > end)
		return beyond ? MORE : PASS;
	/* Only a pure ACK: no payload, no SYN, FIN or RST. */
	if (!th->ack || th->syn || th->fin || th->rst || l4_len != th->doff * 4)
		return PASS;
	/* No FIN held anywhere: no lookup (a cold hash costs hundreds of ns
	 * per ACK of traffic that is not Hooker's). */
	live = bpf_map_lookup_elem(&fin_guards_live, &zero);
	if (!live || !*(volatile __u64 *)live)
		return PASS;
	f->lport = bpf_ntohs(th->dest);
	f->rport = bpf_ntohs(th->source);
	g = bpf_map_lookup_elem(&fin_guards, f);
	if (!g || bpf_ntohl(th->ack_seq) != g->ack_seq)
		return PASS;
	return drop(HK_CNT_XDP_FIN_ACK_HELD);
}

static __always_inline int on_udp(struct udphdr *udp, void *end, __u32 beyond)
{
	struct hk_wire_hdr *h;
	__u64 token;
	__u32 udp_len;

	if ((void *)(udp + 1) > end)
		return beyond ? MORE : PASS;
	if (udp->dest != bpf_htons(hk_udp_port))
		return PASS; /* not Hooker's: not our business */
	h = (void *)(udp + 1);
	if ((void *)(h + 1) > end)
		return beyond ? MORE : drop(HK_CNT_XDP_SHORT);
	if (h->magic != bpf_htons(HK_WIRE_MAGIC))
		return drop(HK_CNT_XDP_BAD_MAGIC);
	if (h->version != HK_VERSION)
		return drop(HK_CNT_XDP_BAD_VERSION);
	udp_len = bpf_ntohs(udp->len);
	/* Under GRO one UDP header covers several segments; the stack and
	 * hookerd check each, XDP checks the first. */
	if (udp_len < sizeof(*udp) + sizeof(*h) + bpf_ntohs(h->len))
		return drop(HK_CNT_XDP_BAD_LEN);
	token = bpf_be64_to_cpu(h->token);
	/* A path probe (or its answer): no connection, no payload. */
	if (token == HK_WIRE_PROBE_TOKEN && h->type == HK_WIRE_ACK &&
	    (h->flags & HK_WIRE_F_HELLO) && h->len == 0) {
		count(HK_CNT_XDP_PATH_PROBE);
		return PASS;
	}
	if (!bpf_map_lookup_elem(&tokens, &token))
		return drop(HK_CNT_XDP_UNKNOWN_TOKEN);
	count(HK_CNT_XDP_PASS);
	return PASS;
}

static __always_inline int verdict(void *data, void *end, __u32 beyond)
{
	struct hk_flow f;
	__u8 proto = 0;
	__u32 l4_len = 0;
	void *h = l4(data, end, &f, &proto, &l4_len);

	if (!h)
		return PASS;
	if (proto == IPPROTO_UDP)
		return on_udp(h, end, beyond);
	if (proto == IPPROTO_TCP)
		return on_tcp(h, end, beyond, &f, l4_len);
	return PASS;
}

SEC("xdp")
int hk_ingress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	return verdict(data, end, 0) == DROP ? XDP_DROP : XDP_PASS;
}

/* Ethernet, the longest IP header, and a TCP header or UDP plus Hooker's. */
#define HK_HEADERS (14 + 60 + 8 + 32)

SEC("tc")
int hk_ingress_tc(struct __sk_buff *skb)
{
	__u32 linear = skb->data_end - skb->data;
	int v = verdict((void *)(long)skb->data, (void *)(long)skb->data_end,
			skb->len - linear);

	/* A GSO packet may keep all but its first bytes in pages. The headers
	 * are pulled into the linear part only when one that is needed is not
	 * there: the helper is not free even when they are, and most packets
	 * are not Hooker's. */
	if (v == MORE) {
		bpf_skb_pull_data(skb, skb->len < HK_HEADERS ? skb->len : HK_HEADERS);
		v = verdict((void *)(long)skb->data, (void *)(long)skb->data_end, 0);
	}
	/* Passing is "next", not "pass": other programs on the interface
	 * (tcx or classic tc) still see the packet. */
	return v == DROP ? TCX_DROP : TCX_NEXT;
}

char _license[] SEC("license") = "GPL";
