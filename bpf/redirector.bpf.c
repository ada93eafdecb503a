// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The paper's msg_redirector: sock_ops negotiates Hooker in the TCP
 * handshake and moves agreed connections into a SOCKHASH; sk_msg redirects
 * every send of a moved socket to hookerd, and hookerd's sends back into the
 * application's receive queue.
 *
 * Connections are bound to hookerd inside the kernel, in the established
 * callback, to a slot (a loopback socket pair hookerd prepared in advance),
 * so no byte can be sent before the redirect is in place.
 */
/* The context structs are UAPI, their layout kernel ABI: no CO-RE relocation
 * for them. Only the cgroup rules' reads of struct cgroup (in_cgroup) are
 * relocated, and for those libbpf parses the kernel's BTF at load (2-9 ms
 * here). */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "hooker_abi.h"
#include "maps.bpf.h"
#include "listener_cg.bpf.h"

#define AF_INET 2
#define AF_INET6 10
#define SOL_TCP 6
#define TCP_SAVE_SYN 27
#define TCP_NOTSENT_LOWAT 25
#define TCP_CONGESTION 13
#define TCPHDR_SYN 0x02
#define TCPHDR_ACK 0x10
#define ENOMSG 42
#define ENOENT 2
#define EAGAIN 11

/* TCP states, from include/net/tcp_states.h (not in BTF as an enum). */
#define HK_TCP_FIN_WAIT1 4
#define HK_TCP_CLOSE 7
#define HK_TCP_LAST_ACK 9
#define HK_TCP_LISTEN 10

#define CTX(field) (*(volatile __u32 *)&(field))

/* Set by hookerd before load. */
const volatile __u16 hk_udp_port = 0;
const volatile __u64 hk_secret[2] = {0, 0};
/* The mechanisms hookerd has deployed (HK_MECH_BIT each). hookerd writes it
 * through the mapped .bss as it deploys and undeploys them; a handshake
 * names only a deployed one, so no connection ever waits for a deployment. */
volatile __u32 hk_deployed = 0;

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 3 * HK_MAX_SLOTS);
	__type(key, struct hk_flow);
	__type(value, __u64);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct hk_sk);
} sk_state SEC(".maps");

/* Each slot's `out` socket at the slot's index: the hot path's redirect is
 * an array lookup, not a hash of the tuple. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, HK_MAX_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} slot_out SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, HK_MAX_SLOTS);
	__type(value, __u32);
} free_slots SEC(".maps");

/* The policy, by server TCP port; hookerd changes it while it runs, and
 * each handshake step reads it once, so a connection follows the rule of
 * the moment its SYN (client) or SYN-ACK (server) was written. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HK_MAX_PORTS);
	__type(key, __u16);
	__type(value, struct hk_port_rule);
} ports SEC(".maps");

/* hk_port_mask, written by hookerd through an mmap. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct hk_port_mask);
} port_mask SEC(".maps");

/* Peers UDP does not reach (hk_udp_blocked), written by hookerd when a
 * connection's opening datagrams went unanswered. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HK_MAX_BLOCKED_PEERS);
	__type(key, struct hk_peer_key);
	__type(value, struct hk_udp_blocked);
} udp_blocked SEC(".maps");

/* The configuration file's rules (hk_rules), one inner map per load:
 * hookerd swaps a new one in with one update of entry 0, and a program that
 * looked the old one up keeps reading it, whole, until it returns. Empty
 * (no entry) when the file has no rules. */
/* Sizes, not BTF types: clang leaves an inner map's value type a forward
 * declaration, which libbpf cannot size. */
struct rules_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct hk_rules));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct rules_inner);
} rule_sets SEC(".maps");

/* What each moved application consumed, by slot, so hookerd can bound
 * what it queues there (the kernel does not bound redirected bytes by the
 * receive buffer); the send side counts what its sends returned (hk_lanes).
 * Mapped into hookerd, which reads it at every delivery without a system
 * call. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HK_MAX_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u64);
} consumed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HK_MAX_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct hk_lanes);
} lanes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HK_MAX_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* rarely more than a few */
	__type(key, __u64); /* pid_tgid */
	__type(value, struct hk_send);
} sends SEC(".maps");

/* Handshakes our SYN-ACK accepted, by tuple as on the wire (this side's
 * view), until the connection is established, and the same by token. A
 * client whose last handshake ACK was lost sends its bytes through hookerd
 * all the same, and no TCP segment of theirs completes the handshake:
 * hookerd does, when the bytes or the client's FIN or RST come (it knows
 * those are a moved connection's by this). LRU: a handshake that never
 * completes ages out without a sweep. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HK_MAX_SLOTS);
	__type(key, struct hk_flow);
	__type(value, struct hk_embryo);
} embryos SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HK_MAX_SLOTS);
	__type(key, __u64); /* the token */
	__type(value, struct hk_flow); /* as in embryos */
} embryo_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		*v += 1;
}

static __always_inline void flow_of(const struct bpf_sock_ops *skops,
				    struct hk_flow *f)
{
	/* Every context field is read unconditionally and through volatile
	 * loads at fixed offsets: the verifier rejects a load through a
	 * context pointer that the compiler computed once and reused. */
	__u32 l4 = CTX(skops->local_ip4), r4 = CTX(skops->remote_ip4);
	__u32 l6_0 = CTX(skops->local_ip6[0]), l6_1 = CTX(skops->local_ip6[1]);
	__u32 l6_2 = CTX(skops->local_ip6[2]), l6_3 = CTX(skops->local_ip6[3]);
	__u32 r6_0 = CTX(skops->remote_ip6[0]), r6_1 = CTX(skops->remote_ip6[1]);
	__u32 r6_2 = CTX(skops->remote_ip6[2]), r6_3 = CTX(skops->remote_ip6[3]);
	__u32 family = skops->family;

	__builtin_memset(f, 0, sizeof(*f));
	f->family = family;
	f->lport = skops->local_port; /* host order */
	/* remote_port is network order, shifted into the upper 16 bits. */
	f->rport = bpf_ntohl(skops->remote_port);
	if (family == AF_INET) {
		f->laddr[0] = l4;
		f->raddr[0] = r4;
	} else {
		f->laddr[0] = l6_0;
		f->laddr[1] = l6_1;
		f->laddr[2] = l6_2;
		f->laddr[3] = l6_3;
		f->raddr[0] = r6_0;
		f->raddr[1] = r6_1;
		f->raddr[2] = r6_2;
		f->raddr[3] = r6_3;
	}
}

/* Loopback connections are never moved: hookerd's own slot sockets are
 * loopback, and moving a local connection over UDP gains nothing. */
static __always_inline bool is_loopback(const struct hk_flow *f)
{
	if (f->family == AF_INET)
		return (bpf_ntohl(f->raddr[0]) >> 24) == 127;
	if (f->raddr[0] == 0 && f->raddr[1] == 0) {
		if (f->raddr[2] == 0 && f->raddr[3] == bpf_htonl(1))
			return true; /* ::1 */
		if (f->raddr[2] == bpf_htonl(0xffff))
			return (bpf_ntohl(f->raddr[3]) >> 24) == 127;
	}
	return false;
}

/* The tuple as packets show it: an IPv4-mapped IPv6 socket's in IPv4 form. */
static __always_inline void wire_flow(struct hk_flow *f)
{
	if (f->family != AF_INET6 || f->laddr[0] || f->laddr[1] ||
	    f->laddr[2] != bpf_htonl(0xffff))
		return;
	f->family = AF_INET;
	f->laddr[0] = f->laddr[3];
	f->raddr[0] = f->raddr[3];
	f->laddr[2] = f->laddr[3] = 0;
	f->raddr[1] = f->raddr[2] = f->raddr[3] = 0;
}

/* Whether some rule names this server port (hk_port_mask). */
static __always_inline int port_named(__u16 port)
{
	const struct hk_port_mask *m;
	__u32 zero = 0;

	m = bpf_map_lookup_elem(&port_mask, &zero);
	return !m || (m->bits[port >> 6] >> (port & 63)) & 1;
}

static __always_inline struct hk_port_rule *rule_of(__u16 port)
{
	return bpf_map_lookup_elem(&ports, &port);
}

/* ---- the file's rules ------------------------------------------------- */

/* A full socket's cgroup (the connecting one's, a listener's, an accepted
 * one's). sock_ops has no helper for a socket's cgroup, so it is read
 * through BTF (bpf_skc_to_tcp_sock, CO-RE reads). In the SYN-ACK callbacks
 * the kernel hands the program no socket at all (skops->sk is NULL for a
 * request socket: SOCK_OPS_GET_SK needs a full one): there the listener's
 * cgroup comes from its record (listener_of). */
static __always_inline struct cgroup *sk_cgroup(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct tcp_sock *tp;

	if (!sk)
		return NULL;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return NULL;
	return BPF_CORE_READ((struct sock *)tp, sk_cgrp_data.cgroup);
}

/* The key of the listener answering this connection (or of this
 * listener, in the listen callback): a request socket has the listener's
 * network namespace, port and family (inet_reqsk_alloc copies them). */
static __always_inline void listener_key(struct bpf_sock_ops *skops, __u16 port,
					 __u16 family, struct hk_listener_key *k)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->netns = bpf_get_netns_cookie(skops);
	k->port = port;
	k->family = family;
}

static __always_inline const struct hk_listener_cg *
listener_of(struct bpf_sock_ops *skops, const struct hk_flow *f)
{
	struct hk_listener_key k;

	listener_key(skops, f->lport, f->family, &k);
	return bpf_map_lookup_elem(&listener_cgs, &k);
}

/* Whether the cgroup is the rule's or under it: its ancestor at the rule's
 * depth is the rule's cgroup (struct cgroup.ancestors, kernel 6.1,
 * commit 7f203bc89eb6). A server answering a SYN has only its listener's
 * record: the same question, on the ids recorded at listen time. */
static __always_inline int in_cgroup(struct cgroup *cg, const struct hk_listener_cg *lis,
				     const struct hk_rule *r)
{
	struct cgroup *anc = NULL;
	__u32 level = r->cgroup_level;
	int depth;

	if (level > HK_CG_MAX_LEVEL)
		return 0;
	if (!cg) {
		if (!lis || lis->level < level)
			return 0;
		return lis->id[level] == r->cgroup;
	}
	depth = BPF_CORE_READ(cg, level);
	if (depth < (int)level)
		return 0;
	bpf_core_read(&anc, sizeof(anc), &cg->ancestors[level]);
	return anc && BPF_CORE_READ(anc, kn, id) == r->cgroup;
}

struct match {
	const struct hk_rules *set;
	struct cgroup *cg;                /* the socket's, if it is a full one */
	const struct hk_listener_cg *lis; /* else its listener's record */
	__u32 src[4], dst[4];
	__u16 port;
	__u8 family;
	__u8 passive;
	__u32 found;  /* index + 1 of the rule that matched, 0: none yet */
};

static long match_one(__u32 i, void *ctx)
{
	struct match *m = ctx;
	const struct hk_rule *r;

	if (i >= HK_MAX_RULES)
		return 1;
	r = &m->set->rule[i];
	if (!hk_rule_matches(r, m->family, m->src, m->dst, m->port))
		return 0;
	if (r->cgroup && !in_cgroup(m->cg, m->lis, r))
		return 0;
	m->found = i + 1;
	return 1;
}

/* What policy_of found: a copy of the rule, and which file rule decided
 * (hk_rule_ref), 0 if a port rule did. */
struct policy {
	struct hk_port_rule rule;
	__u32 ref;
};

/* The rule of this handshake step: the file's first matching rule, else
 * the port's rule, copied into *out; 0 if none applies. The file's set is
 * looked up once, so the whole step sees one policy even while hookerd
 * swaps in another. `f` is the socket's own view; `passive`: it is the
 * server's. A global function, so the verifier checks it once: inlined at
 * each of the four handshake steps that ask, its rule loop and cgroup
 * reads made up most of sock_ops' verification, itself most of hookerd's
 * start-up. */
__noinline int policy_of(struct bpf_sock_ops *skops, const struct hk_flow *f, int passive,
			 struct policy *out)
{
	const struct hk_port_rule *rule;
	struct match m = {};
	struct hk_flow w;
	__u32 zero = 0, n;
	void *inner;

	if (!f || !out)
		return 0;
	w = *f;
	out->ref = 0;
	inner = bpf_map_lookup_elem(&rule_sets, &zero);
	if (!inner)
		goto ports;
	m.set = bpf_map_lookup_elem(inner, &zero);
	if (!m.set || !m.set->n)
		goto ports;
	/* An IPv4-mapped IPv6 socket matches IPv4 prefixes. */
	wire_flow(&w);
	m.family = w.family;
	m.port = passive ? w.lport : w.rport;
	/* The client is the source, the server the destination. */
	__builtin_memcpy(m.src, passive ? w.raddr : w.laddr, sizeof(m.src));
	__builtin_memcpy(m.dst, passive ? w.laddr : w.raddr, sizeof(m.dst));
	m.passive = passive;
	if (m.set->flags & HK_RULES_CGROUP) {
		m.cg = sk_cgroup(skops);
		/* A server's SYN-ACK: no socket, its listener's cgroup. No
		 * record (a listener hookerd never saw) matches no cgroup. */
		if (!m.cg && passive)
			m.lis = listener_of(skops, f);
	}
	n = m.set->n;
	bpf_loop(n < HK_MAX_RULES ? n : HK_MAX_RULES, match_one, &m, 0);
	if (m.found && m.found <= HK_MAX_RULES) {
		const struct hk_rule *r = &m.set->rule[m.found - 1];

		out->ref = hk_rule_ref(m.set->gen, r->ref);
		__builtin_memcpy(&out->rule, &r->action, sizeof(out->rule));
		return 1;
	}
ports:
	rule = rule_of(passive ? f->lport : f->rport);
	if (!rule)
		return 0;
	__builtin_memcpy(&out->rule, rule, sizeof(out->rule));
	return 1;
}

/* Whether a listener on this port may move anything: a port rule, or a
 * file rule over it that moves (it cannot know the peers yet). */
struct port_scan {
	const struct hk_rules *set;
	__u16 port;
	int moves;
};

static long port_one(__u32 i, void *ctx)
{
	struct port_scan *p = ctx;
	const struct hk_rule *r;

	if (i >= HK_MAX_RULES)
		return 1;
	r = &p->set->rule[i];
	if (p->port < r->port_lo || p->port > r->port_hi || !r->action.accept)
		return 0;
	p->moves = 1;
	return 1;
}

static __always_inline int port_may_move(__u16 port)
{
	struct port_scan p = {.port = port};
	__u32 zero = 0, n;
	void *inner;

	if (!port_named(port))
		return 0;
	if (rule_of(port))
		return 1;
	inner = bpf_map_lookup_elem(&rule_sets, &zero);
	if (!inner)
		return 0;
	p.set = bpf_map_lookup_elem(inner, &zero);
	if (!p.set)
		return 0;
	n = p.set->n;
	bpf_loop(n < HK_MAX_RULES ? n : HK_MAX_RULES, port_one, &p, 0);
	return p.moves;
}

static __always_inline int deployed(__u8 mech)
{
	return hk_deployed & HK_MECH_BIT(mech);
}

/* Whether the peer of this connection is remembered as unreachable by UDP:
 * then this side offers (client) or accepts (server) nothing, and the
 * connection stays plain TCP instead of failing. Past its time the entry
 * no longer counts, so the next connection tries UDP again. */
static __always_inline int udp_blocked_peer(const struct hk_flow *f)
{
	struct hk_peer_key key = {};
	struct hk_udp_blocked *b;
	struct hk_flow w = *f;

	wire_flow(&w);
	key.family = w.family;
	__builtin_memcpy(key.addr, w.raddr, sizeof(key.addr));
	b = bpf_map_lookup_elem(&udp_blocked, &key);
	if (!b || bpf_ktime_get_ns() >= b->until_ns)
		return 0;
	count(HK_CNT_PEER_UDP_BLOCKED);
	return 1;
}

static __always_inline __u64 mix64(__u64 x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

/* The accepting side has no socket to keep state on while it answers a SYN
 * (and may answer it more than once), so its token is derived from the
 * client's token and the tuple under a secret: the SYN-ACK, its
 * retransmissions and the established callback all compute the same one. */
static __always_inline __u64 passive_token(__u64 client_token,
					   const struct hk_flow *f)
{
	__u64 h = mix64(hk_secret[0] ^ client_token);

	h = mix64(h ^ hk_secret[1] ^ ((__u64)f->lport << 16 | f->rport));
	for (int i = 0; i < 4; i++)
		h = mix64(h ^ f->raddr[i] ^ ((__u64)f->laddr[i] << 32));
	return h ? h : 1;
}

static __always_inline __u64 random_token(void)
{
	__u64 t = ((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32();

	return t ? t : 1;
}

static __always_inline int load_opt(struct bpf_sock_ops *skops,
				    struct hk_tcp_opt *opt, __u64 flags)
{
	int ret;

	__builtin_memset(opt, 0, sizeof(*opt));
	opt->kind = HK_TCPOPT_EXP;
	opt->len = 4; /* search by kind and the 2-byte ExID */
	opt->exid = bpf_htons(HK_EXID);
	ret = bpf_load_hdr_opt(skops, opt, sizeof(*opt), flags);
	if (ret < 0)
		return ret;
	/* The mechanism is the caller's to judge: HK_MECH_NONE is a refusal
	 * in a SYN-ACK and nonsense in a SYN. */
	if (ret != HK_OPT_LEN || opt->version != HK_VERSION || opt->udp_port == 0)
		return -ENOMSG;
	return 0;
}

static __always_inline int store_opt(struct bpf_sock_ops *skops, __u64 token,
				     __u8 mech)
{
	struct hk_tcp_opt opt = {
		.kind = HK_TCPOPT_EXP,
		.len = HK_OPT_LEN,
		.exid = bpf_htons(HK_EXID),
		.version = HK_VERSION,
		.mech = mech,
		.udp_port = bpf_htons(hk_udp_port),
		.token = bpf_cpu_to_be64(token),
	};

	return bpf_store_hdr_opt(skops, &opt, sizeof(opt), 0);
}

/* skops->sk is read once into a local: re-reading the context field after
 * the NULL check gives the verifier a fresh, unchecked pointer. */
static __always_inline struct hk_sk *sk_state_of(struct bpf_sock_ops *skops,
						 __u64 flags)
{
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return NULL;
	return bpf_sk_storage_get(&sk_state, sk, NULL, flags);
}

static __always_inline void release_slot(__u32 slot)
{
	bpf_map_push_elem(&free_slots, &slot, 0);
	count(HK_CNT_SLOT_RETURNED);
}

/* hookerd keeps the pool full from these counts. */
static __always_inline int take_slot(__u32 *slot)
{
	if (bpf_map_pop_elem(&free_slots, slot)) {
		count(HK_CNT_NO_SLOT);
		return -1;
	}
	count(HK_CNT_SLOT_TAKEN);
	return 0;
}

/* Every event wakes hookerd at once (FORCE: an unread quiet one would
 * otherwise silence the ring's own wake-ups for those after it), but a
 * socket's CLOSED: its END already left at FIN_WAIT1/LAST_ACK, and the
 * rest (the slot back in the pool) can wait for hookerd's next wake-up,
 * its 5 ms tick at worst. A wake-up costs an interrupt to self and a
 * context switch, on the CPU short connections wait for. */
static __always_inline void submit(struct hk_event *ev)
{
	bpf_ringbuf_submit(ev, ev->type == HK_EV_CLOSED ? BPF_RB_NO_WAKEUP : BPF_RB_FORCE_WAKEUP);
}

static __always_inline void emit_why(__u32 type, const struct hk_sk *st,
				     const struct hk_flow *app, __u64 peer_token,
				     __u16 peer_port, __u8 active, __u64 cookie,
				     const struct bpf_sock_ops *skops, __u32 why)
{
	__u32 snd_nxt = skops->snd_nxt, rcv_nxt = skops->rcv_nxt, mss = skops->mss_cache;
	struct hk_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);

	if (!ev) {
		count(HK_CNT_EVENT_LOST);
		return;
	}
	ev->type = type;
	ev->slot = st->slot;
	ev->app = *app;
	ev->token = st->token;
	ev->peer_token = peer_token;
	ev->cookie = cookie;
	ev->peer_port = peer_port;
	ev->active = active;
	ev->mech = st->mech; /* hookerd picks the mechanism by it */
	ev->snd_nxt = snd_nxt;
	ev->rcv_nxt = rcv_nxt;
	ev->mss = mss;
	ev->rule = st->rule;
	ev->why = why;
	submit(ev);
}

static __always_inline void emit(__u32 type, const struct hk_sk *st,
				 const struct hk_flow *app, __u64 peer_token,
				 __u16 peer_port, __u8 active, __u64 cookie,
				 const struct bpf_sock_ops *skops)
{
	emit_why(type, st, app, peer_token, peer_port, active, cookie, skops, 0);
}

/* The rule named a mechanism hookerd has not deployed: this connection
 * stays plain TCP and hookerd deploys it for the next ones. */
static __always_inline void need_mech(__u8 mech, const struct hk_flow *app)
{
	struct hk_event *ev;

	count(HK_CNT_MECH_NOT_DEPLOYED);
	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count(HK_CNT_EVENT_LOST);
		return;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->type = HK_EV_NEED_MECH;
	ev->app = *app;
	ev->mech = mech;
	submit(ev);
}

/* This connection stays plain TCP although a rule named a mechanism: one
 * line in hookerd's log (rate-limited there). */
static __always_inline void fell_back(__u8 mech, __u32 why, __u8 active,
				      const struct hk_flow *app)
{
	struct hk_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);

	if (!ev) {
		count(HK_CNT_EVENT_LOST);
		return;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->type = HK_EV_FELL_BACK;
	ev->app = *app;
	ev->mech = mech;
	ev->active = active;
	ev->why = why;
	submit(ev);
}

/* Both sides agreed: put the application socket in the SOCKHASH and point
 * its sends at its slot. Runs before connect()/accept() return. */
static __always_inline void bind_conn(struct bpf_sock_ops *skops,
				      struct hk_sk *st,
				      const struct hk_tcp_opt *peer, int active)
{
	struct hk_flow key;
	struct hk_token tok = {};
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct hk_lanes *lane;
	__u32 step;
	long err = 0;

	flow_of(skops, &key);
	st->redirect_flags = 0; /* the lanes decide, per send (into_slot) */
	/* A fresh stream: the slot's lanes start empty and fast, before the
	 * first send can look at them (hookerd hears of it only later). */
	lane = bpf_map_lookup_elem(&lanes, &st->slot);
	step = HK_BIND_LANES;
	if (!lane)
		goto fail;
	__builtin_memset(lane, 0, sizeof(*lane));
	tok.slot = st->slot;
	tok.state = HK_TOKEN_LIVE;
	tok.created_ns = bpf_ktime_get_ns();
	step = HK_BIND_TOKEN;
	err = bpf_map_update_elem(&tokens, &st->token, &tok, BPF_ANY);
	if (err)
		goto fail;
	step = HK_BIND_SOCKHASH;
	err = bpf_sock_hash_update(skops, &socks, &key, BPF_NOEXIST);
	if (err) {
		bpf_map_delete_elem(&tokens, &st->token);
		goto fail;
	}
	st->state = HK_SK_MOVED;
	count(active ? HK_CNT_MOVED_ACTIVE : HK_CNT_MOVED_PASSIVE);
	emit(HK_EV_BOUND, st, &key, bpf_be64_to_cpu(peer->token),
	     bpf_ntohs(peer->udp_port), active, cookie, skops);
	/* From now on only state changes matter, and hookerd's wake-ups of a
	 * refused writer (on_wake_ack): no more options to write. */
	bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG |
					 BPF_SOCK_OPS_PARSE_UNKNOWN_HDR_OPT_CB_FLAG);
	return;
fail:
	/* The peer believes the connection is moved; hookerd tells it to
	 * reset rather than let it send into the void. */
	count(HK_CNT_BIND_FAILED);
	st->state = HK_SK_PLAIN;
	emit_why(HK_EV_BIND_FAILED, st, &key, bpf_be64_to_cpu(peer->token),
		 bpf_ntohs(peer->udp_port), active, cookie, skops,
		 step | (__u32)(-err) << 8);
	release_slot(st->slot);
	bpf_sock_ops_cb_flags_set(skops, 0);
}

/* ---- tcp-cc ----------------------------------------------------------- */

/* A tcp-cc rule: this connection stays TCP (no option, no slot) and runs
 * the rule's congestion control, set here, before its first segment
 * (client) or its first data (server). Only while hookerd has tcp-cc
 * deployed, so the algorithm it names is registered: otherwise the
 * connection keeps the namespace's default and hookerd deploys it for the
 * next ones. A name the kernel does not know (an object undeployed since)
 * leaves the default too, counted. */
static __always_inline void set_cc(struct bpf_sock_ops *skops,
				   const struct hk_port_rule *rule,
				   const struct hk_flow *f)
{
	char name[HK_CC_NAME_MAX];

	if (!deployed(HK_MECH_TCP_CC)) {
		need_mech(HK_MECH_TCP_CC, f);
		return;
	}
	__builtin_memcpy(name, rule->cc, sizeof(name));
	name[HK_CC_NAME_MAX - 1] = 0;
	if (bpf_setsockopt(skops, SOL_TCP, TCP_CONGESTION, name, sizeof(name)))
		count(HK_CNT_CC_FAILED);
	else
		count(HK_CNT_CC_SET);
}

/* ---- active side ------------------------------------------------------ */

static __always_inline void on_connect(struct bpf_sock_ops *skops)
{
	const struct hk_port_rule *rule;
	struct policy pol;
	struct hk_flow f;
	struct hk_sk *st;
	__u32 slot;
	__u8 mech;

	/* remote_port: network order in the upper 16 bits. */
	if (!port_named(bpf_ntohl(skops->remote_port)))
		return;
	flow_of(skops, &f);
	if (is_loopback(&f))
		return;
	if (!policy_of(skops, &f, 0, &pol))
		return;
	rule = &pol.rule;
	if (rule->cc[0]) {
		set_cc(skops, rule, &f);
		return;
	}
	if (rule->prefer == HK_MECH_NONE)
		return;
	if (udp_blocked_peer(&f))
		return;
	mech = rule->prefer;
	if (!deployed(mech)) {
		need_mech(mech, &f);
		/* Meanwhile another mechanism of the rule will do, if deployed. */
		mech = hk_first_mech(rule->accept & hk_deployed);
		if (mech == HK_MECH_NONE)
			return;
	}
	/* Reserve the slot now: if there is none, propose nothing. */
	if (take_slot(&slot))
		return;
	st = sk_state_of(skops, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		release_slot(slot);
		return;
	}
	st->slot = slot;
	st->token = random_token();
	st->state = HK_SK_SYN_SENT;
	st->mech = mech;
	st->rule = pol.ref;
	bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG |
						 BPF_SOCK_OPS_STATE_CB_FLAG);
	/* quic's handshake with the peer's hookerd can overlap TCP's. The
	 * other mechanisms need nothing per peer: no event, no cost. */
	if (mech == HK_MECH_QUIC)
		emit(HK_EV_CONNECTING, st, &f, 0, 0, 1, 0, skops);
}

static __always_inline struct hk_sk *syn_sent_state(struct bpf_sock_ops *skops)
{
	struct hk_sk *st;

	st = sk_state_of(skops, 0);
	if (!st || st->state != HK_SK_SYN_SENT)
		return NULL;
	return st;
}

static __always_inline void on_active_established(struct bpf_sock_ops *skops)
{
	struct hk_sk *st = syn_sent_state(skops);
	struct hk_tcp_opt peer;
	struct hk_flow f;
	__u32 why;

	if (!st)
		return;
	/* skb is the SYN-ACK here. A confirmation of another mechanism than
	 * the one asked for is a peer this version does not understand. */
	if (load_opt(skops, &peer, 0) ||
	    (peer.mech != st->mech && peer.mech != HK_MECH_NONE)) {
		count(HK_CNT_PEER_NO_HOOKER);
		why = HK_FB_PEER_NO_HOOKER;
		goto plain;
	}
	if (peer.mech == HK_MECH_NONE) {
		count(HK_CNT_PEER_REFUSED_MECH);
		why = HK_FB_PEER_REFUSED;
		goto plain;
	}
	bind_conn(skops, st, &peer, 1);
	return;
plain:
	flow_of(skops, &f);
	fell_back(st->mech, why, 1, &f);
	st->state = HK_SK_PLAIN;
	release_slot(st->slot);
	bpf_sock_ops_cb_flags_set(skops, 0);
}

/* ---- passive side ----------------------------------------------------- */

static __always_inline void on_listen(struct bpf_sock_ops *skops)
{
	struct hk_listener_key k;
	int one = 1;

	if (!port_may_move(skops->local_port))
		return;
	/* Keep the SYN so the established callback can read its option. */
	bpf_setsockopt(skops, SOL_TCP, TCP_SAVE_SYN, &one, sizeof(one));
	/* Its cgroup, for the rules' cgroup match when it answers a SYN; the
	 * state callback forgets it when it closes (forget_listener). Its
	 * children inherit the flags, and on_passive_established clears them. */
	listener_key(skops, skops->local_port, skops->family, &k);
	hk_listener_record(&k, sk_cgroup(skops), bpf_get_socket_cookie(skops));
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						 BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG |
						 BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* A listener closed: its record goes, unless a newer listener on the same
 * port replaced it (then the record is that one's). */
static __always_inline void forget_listener(struct bpf_sock_ops *skops)
{
	const struct hk_listener_cg *v;
	struct hk_listener_key k;

	listener_key(skops, skops->local_port, skops->family, &k);
	v = bpf_map_lookup_elem(&listener_cgs, &k);
	if (v && v->cookie == bpf_get_socket_cookie(skops))
		bpf_map_delete_elem(&listener_cgs, &k);
}

/* What a SYN-ACK says: the mechanism it confirms with this side's token,
 * or a refusal (HK_MECH_NONE, token 0). */
struct synack {
	__u64 token;
	__u8 mech;
	__u8 not_deployed; /* the mechanism refused only for that */
	__u8 asked;        /* the mechanism the SYN asked for */
};

/* Decide whether this SYN-ACK accepts Hooker; returns 0 if it carries no
 * option. An acceptance is recorded in `tokens` (embryonic) with the slot
 * it reserves, so a retransmitted SYN-ACK and the established callback find
 * the same answer. */
static __always_inline int synack_answer(struct bpf_sock_ops *skops,
					 struct synack *ans)
{
	const struct hk_port_rule *rule;
	struct hk_tcp_opt syn;
	struct policy pol;
	struct hk_flow f;
	struct hk_token tok = {}, *old;

	ans->not_deployed = HK_MECH_NONE;
	/* In SYN-cookie mode the SYN is not kept: stay plain. */
	if (skops->args[0] == BPF_WRITE_HDR_TCP_SYNACK_COOKIE) {
		count(HK_CNT_SYNCOOKIE);
		return 0;
	}
	if (load_opt(skops, &syn, BPF_LOAD_HDR_OPT_TCP_SYN))
		return 0;
	flow_of(skops, &f);
	if (is_loopback(&f))
		return 0;
	/* A retransmitted SYN-ACK repeats the first one's acceptance, whatever
	 * the policy says now: the established callback will bind by it. */
	ans->token = passive_token(bpf_be64_to_cpu(syn.token), &f);
	ans->mech = syn.mech;
	ans->asked = syn.mech;
	old = bpf_map_lookup_elem(&tokens, &ans->token);
	if (old)
		return 1;
	/* A listener keeps its option callbacks after its port leaves the
	 * policy: then this side moves nothing, as if it ran no hookerd. */
	if (!policy_of(skops, &f, 1, &pol))
		return 0;
	rule = &pol.rule;
	ans->mech = hk_answer_mech(rule, syn.mech);
	if (ans->mech != HK_MECH_NONE && udp_blocked_peer(&f))
		ans->mech = HK_MECH_NONE;
	if (ans->mech != HK_MECH_NONE && !deployed(ans->mech)) {
		ans->not_deployed = ans->mech;
		ans->mech = HK_MECH_NONE;
	}
	if (ans->mech == HK_MECH_NONE) {
		ans->token = 0;
		return 1;
	}
	if (take_slot(&tok.slot))
		return 0;
	tok.state = HK_TOKEN_EMBRYONIC;
	tok.created_ns = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&tokens, &ans->token, &tok, BPF_NOEXIST)) {
		release_slot(tok.slot);
		return 0;
	}
	return 1;
}

/* The SYN-ACK accepting a handshake is written: its sequence numbers go into
 * `embryos` (a retransmission writes the same ones again). */
static __always_inline void record_embryo(struct bpf_sock_ops *skops, __u64 token)
{
	struct hk_embryo e = {.token = token};
	struct tcphdr *th = skops->skb_data;
	struct hk_flow f;

	if ((void *)(th + 1) > skops->skb_data_end)
		return;
	e.seq = bpf_ntohl(th->ack_seq);
	e.ack = bpf_ntohl(th->seq) + 1;
	flow_of(skops, &f);
	wire_flow(&f);
	bpf_map_update_elem(&embryos, &f, &e, BPF_ANY);
	bpf_map_update_elem(&embryo_flows, &token, &f, BPF_ANY);
}

static __always_inline void on_passive_established(struct bpf_sock_ops *skops)
{
	struct hk_tcp_opt syn;
	struct policy pol = {};
	struct hk_token *tok;
	struct hk_flow f;
	struct hk_sk *st;
	__u64 token;

	__u32 hooked = skops->bpf_sock_ops_cb_flags;
	int named = port_named(skops->local_port);

	/* Children inherit the listener's option callbacks; stop them. */
	if (hooked)
		bpf_sock_ops_cb_flags_set(skops, 0);
	/* Only a listener with option callbacks can have accepted Hooker in
	 * its SYN-ACK; that acceptance binds even if the port's rule went
	 * since. Any other connection has nothing to do here unless a rule
	 * names its port (tcp-cc). */
	if (!hooked && !named)
		return;
	flow_of(skops, &f);
	/* Called for every accepted connection: a tcp-cc rule needs no option
	 * (and its SYN carries none from a client whose rule is tcp-cc too). */
	if (named && !is_loopback(&f)) {
		if (policy_of(skops, &f, 1, &pol) && pol.rule.cc[0]) {
			set_cc(skops, &pol.rule, &f);
			return;
		}
	}
	if (load_opt(skops, &syn, BPF_LOAD_HDR_OPT_TCP_SYN))
		return;
	token = passive_token(bpf_be64_to_cpu(syn.token), &f);
	tok = bpf_map_lookup_elem(&tokens, &token);
	if (!tok || tok->state != HK_TOKEN_EMBRYONIC)
		return; /* our SYN-ACK did not accept */
	st = sk_state_of(skops, BPF_SK_STORAGE_GET_F_CREATE);
	if (st) {
		st->slot = tok->slot;
		st->token = token;
		st->mech = syn.mech; /* confirmed by our SYN-ACK (a token exists) */
		st->rule = pol.ref; /* the rule now: its options, as a port rule's are */
		bind_conn(skops, st, &syn, 0);
	}
	/* Only once the event is out: hookerd, finding no embryo, reads the
	 * ring again and finds the connection bound (Daemon::on_fin). */
	{
		struct hk_flow w = f;

		wire_flow(&w);
		bpf_map_delete_elem(&embryos, &w);
		bpf_map_delete_elem(&embryo_flows, &token);
	}
}

/* ---- header options and state ----------------------------------------- */

static __always_inline void on_hdr_opt_len(struct bpf_sock_ops *skops)
{
	__u8 flags = skops->skb_tcp_flags;

	struct synack ans;

	if ((flags & (TCPHDR_SYN | TCPHDR_ACK)) == (TCPHDR_SYN | TCPHDR_ACK)) {
		if (synack_answer(skops, &ans))
			bpf_reserve_hdr_opt(skops, HK_OPT_LEN, 0);
	} else if (flags & TCPHDR_SYN) {
		if (syn_sent_state(skops))
			bpf_reserve_hdr_opt(skops, HK_OPT_LEN, 0);
	}
}

static __always_inline void on_write_hdr_opt(struct bpf_sock_ops *skops)
{
	__u8 flags = skops->skb_tcp_flags;
	struct synack ans;
	struct hk_sk *st;
	struct hk_flow f;

	if ((flags & (TCPHDR_SYN | TCPHDR_ACK)) == (TCPHDR_SYN | TCPHDR_ACK)) {
		/* Only called when the length callback reserved room. */
		if (!synack_answer(skops, &ans) ||
		    store_opt(skops, ans.token, ans.mech))
			return;
		if (ans.not_deployed) {
			flow_of(skops, &f);
			need_mech(ans.not_deployed, &f);
			return;
		}
		if (ans.mech != HK_MECH_NONE) {
			record_embryo(skops, ans.token);
			count(HK_CNT_SYNACK_OPT_SENT);
			return;
		}
		count(HK_CNT_MECH_NOT_ACCEPTED);
		flow_of(skops, &f);
		fell_back(ans.asked, HK_FB_NOT_ACCEPTED, 0, &f);
	} else if (flags & TCPHDR_SYN) {
		st = syn_sent_state(skops);
		if (st && !store_opt(skops, st->token, st->mech))
			count(HK_CNT_SYN_OPT_SENT);
	}
}

/* fin_guards and its count (maps.bpf.h): counted up before the entry can
 * be seen, down only after it is gone, so the ingress program never skips
 * a guard that is there. */
static __always_inline void add_fin_guard(struct hk_flow *w, struct hk_fin_guard *g)
{
	__u32 zero = 0;
	__u64 *live = bpf_map_lookup_elem(&fin_guards_live, &zero);

	if (!live)
		return;
	__sync_fetch_and_add(live, 1);
	if (bpf_map_update_elem(&fin_guards, w, g, BPF_NOEXIST)) {
		/* There already (a FIN again), or the map is full. */
		bpf_map_update_elem(&fin_guards, w, g, BPF_EXIST);
		__sync_fetch_and_add(live, -1);
	}
}

static __always_inline void del_fin_guard(struct hk_flow *w)
{
	__u32 zero = 0;
	__u64 *live = bpf_map_lookup_elem(&fin_guards_live, &zero);

	if (bpf_map_delete_elem(&fin_guards, w) == 0 && live)
		__sync_fetch_and_add(live, -1);
}

static __always_inline void on_state(struct bpf_sock_ops *skops)
{
	__u32 new_state = skops->args[1];
	struct hk_flow f;
	struct hk_sk *st;

	if (skops->args[0] == HK_TCP_LISTEN) {
		forget_listener(skops);
		return;
	}
	st = sk_state_of(skops, 0);
	if (!st)
		return;
	if (st->state == HK_SK_SYN_SENT && new_state == HK_TCP_CLOSE) {
		/* The connect failed: give the reserved slot back. */
		st->state = HK_SK_PLAIN;
		release_slot(st->slot);
		return;
	}
	if (st->state != HK_SK_MOVED)
		return;
	flow_of(skops, &f);
	if (new_state == HK_TCP_FIN_WAIT1) {
		/* The FIN leaves right after this callback, at snd_nxt (a moved
		 * connection sends no TCP payload). */
		struct hk_fin_guard g = {
			.ack_seq = skops->snd_nxt + 1,
			.since_ns = bpf_ktime_get_ns(),
		};
		struct hk_flow w = f;

		wire_flow(&w);
		add_fin_guard(&w, &g);
	}
	if (new_state == HK_TCP_FIN_WAIT1 || new_state == HK_TCP_LAST_ACK) {
		emit(HK_EV_SHUT_WR, st, &f, 0, 0, 0, 0, skops);
	} else if (new_state == HK_TCP_CLOSE) {
		struct hk_flow w = f;

		wire_flow(&w);
		del_fin_guard(&w);
		st->state = HK_SK_PLAIN;
		bpf_map_delete_elem(&tokens, &st->token);
		emit(HK_EV_CLOSED, st, &f, 0, 0, 0, 0, skops);
	}
}

/* An ACK that hookerd injected into a moved socket, carrying the Hooker
 * option with no UDP port and the socket's own token: wake its writer
 * (hk_lanes.writer_waits). Setting TCP_NOTSENT_LOWAT calls the socket's
 * write-space callback, which wakes every poller with EPOLLOUT; set to the
 * value it has, it changes nothing else. Only hookerd knows the token. */
static __always_inline void on_wake_ack(struct bpf_sock_ops *skops)
{
	struct hk_tcp_opt opt;
	struct hk_sk *st = sk_state_of(skops, 0);
	int lowat = 0;

	if (!st || st->state != HK_SK_MOVED)
		return;
	__builtin_memset(&opt, 0, sizeof(opt));
	opt.kind = HK_TCPOPT_EXP;
	opt.len = 4; /* search by kind and the 2-byte ExID */
	opt.exid = bpf_htons(HK_EXID);
	if (bpf_load_hdr_opt(skops, &opt, sizeof(opt), 0) != HK_OPT_LEN ||
	    opt.udp_port != 0 || opt.token != bpf_cpu_to_be64(st->token))
		return;
	if (bpf_getsockopt(skops, SOL_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof(lowat)) ||
	    bpf_setsockopt(skops, SOL_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof(lowat))) {
		count(HK_CNT_WAKE_FAILED);
		return;
	}
	count(HK_CNT_WRITER_WOKEN);
}

SEC("sockops")
int hk_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		on_connect(skops);
		break;
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		on_listen(skops);
		break;
	case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
		on_hdr_opt_len(skops);
		break;
	case BPF_SOCK_OPS_WRITE_HDR_OPT_CB:
		on_write_hdr_opt(skops);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		on_active_established(skops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		on_passive_established(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		on_state(skops);
		break;
	case BPF_SOCK_OPS_PARSE_HDR_OPT_CB:
		on_wake_ack(skops);
		break;
	}
	return 1;
}

/* ---- the data path ---------------------------------------------------- */

/* Runs on every sendmsg()/write()/sendfile() of a socket in `socks`. The
 * target socket names the connection, so no tag is pushed into the data:
 * each moved connection has its own slot in hookerd. */
/* The record of this thread's send on the slot: the lanes' own if no other
 * thread is sending there (the common case, no map operation), else one in
 * the `sends` hash. NULL if that hash is full. */
static __always_inline struct hk_send *send_of(struct hk_lanes *l, __u32 slot,
					       __u64 tid, int *shared)
{
	struct hk_send *snd, fresh = {.slot = slot};

	*shared = 0;
	if (l->owner == tid)
		return &l->own;
	/* Not while a shared send runs: it may be this thread's, begun while
	 * another one was the owner. */
	if (!l->owner && !*(volatile __u64 *)&l->others_routed) {
		l->own = fresh;
		l->owner = tid;
		return &l->own;
	}
	*shared = 1;
	snd = bpf_map_lookup_elem(&sends, &tid);
	if (snd && snd->slot == slot)
		return snd;
	if (bpf_map_update_elem(&sends, &tid, &fresh, BPF_ANY))
		return NULL;
	return bpf_map_lookup_elem(&sends, &tid);
}

/* The application's send, into its slot by one of the two lanes (see
 * hk_lanes). The verdicts of one socket run one at a time, under its lock,
 * so the mode has one writer; the messages they route may still be moving
 * after the lock is released, which the send records account for. */
static __always_inline int into_slot(struct sk_msg_md *msg, __u32 slot)
{
	struct hk_lanes *l = bpf_map_lookup_elem(&lanes, &slot);
	__u64 tid = bpf_get_current_pid_tgid();
	__u64 mode, slow_running, sent, read, size = msg->size;
	struct hk_send *snd;
	int verdict, slow, shared;

	if (!l)
		return SK_DROP;
	snd = send_of(l, slot, tid, &shared);
	if (!snd) {
		count(HK_CNT_SENDS_FULL); /* the sender gets EACCES */
		return SK_DROP;
	}
	/* This thread's previous message has landed: a verdict runs only
	 * once the message before it was moved. */
	if (snd->landing) {
		if (shared)
			__sync_fetch_and_add(&l->others_landing, -snd->landing);
		snd->landing = 0;
	}
	/* Running before counted (the order hk_app_sent writes them in
	 * reverse), so a send that just ended is seen as one or the other. */
	slow_running = *(volatile __u64 *)&l->own.slow + *(volatile __u64 *)&l->others_slow;
	sent = *(volatile __u64 *)&l->sent;
	read = *(volatile __u64 *)&l->read;
	mode = l->mode;
	if ((mode & HK_LANE_SLOW) && !slow_running && sent == read) {
		mode = (mode & ~HK_LANE_SLOW) + 2; /* hookerd has every byte */
		count(HK_CNT_LANE_FAST);
	}
	if (!(mode & HK_LANE_SLOW) &&
	    sent + l->own.routed + l->others_routed - read >= HK_FAST_LANE_LIMIT) {
		mode = (mode | HK_LANE_SLOW) + 2;
		count(HK_CNT_LANE_SLOW);
	}
	*(volatile __u64 *)&l->mode = mode;
	slow = mode & HK_LANE_SLOW;
	verdict = bpf_msg_redirect_map(msg, &slot_out, slot,
				       slow ? 0 : BPF_F_INGRESS);
	if (verdict != SK_PASS) {
		/* A missing target drops the message; the sender gets EACCES,
		 * and the count says why. */
		count(HK_CNT_REDIRECT_MISS);
		return verdict;
	}
	snd->routed += size;
	if (slow)
		snd->slow += size;
	else
		snd->landing = size;
	if (shared) {
		__sync_fetch_and_add(&l->others_routed, size);
		if (slow)
			__sync_fetch_and_add(&l->others_slow, size);
		else
			__sync_fetch_and_add(&l->others_landing, size);
	}
	return SK_PASS;
}

SEC("sk_msg")
int hk_redirect(struct sk_msg_md *msg)
{
	struct hk_sk *st;
	int verdict;

	if (!msg->sk)
		return SK_PASS;
	st = bpf_sk_storage_get(&sk_state, msg->sk, NULL, 0);
	if (!st)
		return SK_PASS;
	if (st->state == HK_SK_MOVED)
		return into_slot(msg, st->slot);
	if (st->state == HK_SK_PROXY) {
		/* hookerd's write, into the application's receive queue. */
		verdict = bpf_msg_redirect_hash(msg, &socks, &st->target, BPF_F_INGRESS);
		if (verdict != SK_PASS)
			count(HK_CNT_INJECT_MISS);
		return verdict;
	}
	return SK_PASS;
}

/* A send that ended refused, wholly (EAGAIN) or in part by the slow lane
 * (it returned less than its verdicts routed): a non-blocking writer now
 * waits for EPOLLOUT, which only hookerd can have sent (hk_lanes). The
 * event goes once per wait, so a writer that spins on EAGAIN sends one. */
static __always_inline void writer_refused(struct hk_lanes *l, __u32 slot, int ret,
					   __u64 slow, __u64 routed)
{
	struct hk_event *ev;

	if (ret != -EAGAIN && !(slow && ret >= 0 && (__u64)ret < routed))
		return;
	if (*(volatile __u64 *)&l->writer_waits)
		return;
	*(volatile __u64 *)&l->writer_waits = 1;
	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		/* hookerd's periodic look at writer_waits finds it. */
		count(HK_CNT_EVENT_LOST);
		return;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->type = HK_EV_WRITER_WAITS;
	ev->slot = slot;
	submit(ev);
}

/* Every socket's sends and reads run these two (the tracepoints are the
 * machine's), so a socket in no sockmap leaves at its first load: a moved
 * application socket is in `socks`, and its psock is its sk_user_data.
 * Traffic hookerd does not move pays that one load of a socket it is using
 * anyway. tp_btf, not raw_tp: the load is a plain one, and the socket's
 * own storage names its slot (no hash by socket address). */
static __always_inline struct hk_sk *moved(struct sock *sk)
{
	struct hk_sk *st;

	if (!sk->sk_user_data)
		return NULL;
	st = bpf_sk_storage_get(&sk_state, sk, NULL, 0);
	return st && st->state == HK_SK_MOVED ? st : NULL;
}

/* The end of an application's send: what it returned is what the lanes
 * carried, whatever part of what its verdicts routed the kernel could not
 * move. */
SEC("tp_btf/sock_send_length")
int BPF_PROG(hk_app_sent, struct sock *sk, int ret, int flags)
{
	struct hk_sk *st = moved(sk);
	struct hk_lanes *l;
	struct hk_send *snd;
	__u32 slot;
	__u64 tid;

	if (!st)
		return 0;
	slot = st->slot;
	l = bpf_map_lookup_elem(&lanes, &slot);
	if (!l)
		return 0;
	/* Counted before it stops running: the switch back to the fast lane
	 * must always see this send as one or the other. */
	if (ret > 0)
		__sync_fetch_and_add(&l->sent, ret);
	tid = bpf_get_current_pid_tgid();
	if (l->owner == tid) {
		writer_refused(l, slot, ret, l->own.slow, l->own.routed);
		l->own.routed = 0;
		l->own.landing = 0;
		*(volatile __u64 *)&l->own.slow = 0;
		*(volatile __u64 *)&l->owner = 0;
		return 0;
	}
	snd = bpf_map_lookup_elem(&sends, &tid);
	if (snd && snd->slot == slot) {
		writer_refused(l, slot, ret, snd->slow, snd->routed);
		__sync_fetch_and_add(&l->others_routed, -snd->routed);
		__sync_fetch_and_add(&l->others_landing, -snd->landing);
		__sync_fetch_and_add(&l->others_slow, -snd->slow);
		bpf_map_delete_elem(&sends, &tid);
	}
	return 0;
}

/* What an application read from a moved socket (include/trace/events/sock.h). */
SEC("tp_btf/sock_recv_length")
int BPF_PROG(hk_app_read, struct sock *sk, int ret, int flags)
{
	struct hk_sk *st;
	__u32 slot;
	__u64 *n;

	if (ret <= 0 || (flags & 2 /* MSG_PEEK */))
		return 0;
	st = moved(sk);
	if (!st)
		return 0;
	slot = st->slot;
	n = bpf_map_lookup_elem(&consumed, &slot);
	if (n)
		__sync_fetch_and_add(n, ret);
	return 0;
}

char _license[] SEC("license") = "GPL";
