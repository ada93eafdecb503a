// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The paper's hooker_ingress: XDP on the interfaces Hooker traffic arrives
 * on. It sees each Hooker datagram before the stack does, drops the
 * malformed ones and those whose token names no live connection (each
 * reason counted), and passes everything else untouched. */
/* Only UAPI context structs are read here, whose layout is kernel ABI, so no
 * CO-RE relocation is needed; without them libbpf does not parse the kernel's
 * BTF at load (about 11 ms per object on this machine). */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "hooker_abi.h"
#include "maps.bpf.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_UDP 17

const volatile __u16 hk_udp_port = 0;

static __always_inline int drop(__u32 reason)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &reason);

	if (v)
		*v += 1;
	return XDP_DROP;
}

static __always_inline int pass(void)
{
	__u32 idx = HK_CNT_XDP_PASS;
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		*v += 1;
	return XDP_PASS;
}

/* Returns the UDP header of a datagram to hookerd's port, or NULL. */
static __always_inline struct udphdr *hooker_udp(void *data, void *end)
{
	struct ethhdr *eth = data;
	struct udphdr *udp;

	if ((void *)(eth + 1) > end)
		return NULL;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP)
			return NULL;
		/* Fragments carry no (or a partial) header: leave them to
		 * the stack, which reassembles before hookerd reads. */
		if (ip->frag_off & bpf_htons(0x3fff))
			return NULL;
		udp = (void *)ip + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_UDP)
			return NULL;
		udp = (void *)(ip6 + 1);
	} else {
		return NULL;
	}
	if ((void *)(udp + 1) > end || udp->dest != bpf_htons(hk_udp_port))
		return NULL;
	return udp;
}

SEC("xdp")
int hk_ingress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct udphdr *udp = hooker_udp(data, end);
	struct hk_wire_hdr *h;
	__u64 token;
	__u32 udp_len;

	if (!udp)
		return XDP_PASS; /* not Hooker's: not our business */
	h = (void *)(udp + 1);
	if ((void *)(h + 1) > end)
		return drop(HK_CNT_XDP_SHORT);
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
	if (!bpf_map_lookup_elem(&tokens, &token))
		return drop(HK_CNT_XDP_UNKNOWN_TOKEN);
	return pass();
}

char _license[] SEC("license") = "GPL";
