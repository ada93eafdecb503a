/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Every structure shared by the kernel programs and hookerd.
 *
 * Included by the BPF C (after vmlinux.h) and by the C++ side (after
 * <linux/types.h>); the C++ side static_asserts each size in src/core/abi.h.
 * Fixed-width kernel types only, explicit padding, no bitfields, so both
 * compilers lay the structs out identically.
 */
#ifndef HOOKER_ABI_H
#define HOOKER_ABI_H

/* ---- the Hooker TCP option (RFC 6994 experimental option) -------------- */

#define HK_TCPOPT_EXP 253
#define HK_EXID 0x484b /* "HK" */
#define HK_VERSION 1
#define HK_OPT_LEN 16

/* Mechanisms a connection can be moved onto. The option and the wire header
 * both name the mechanism, so more can be negotiated without a new version.
 * UDPLITE and QUIC are reserved for the issues that implement them: hookerd
 * refuses a policy that names them until then. */
enum hk_mech {
	HK_MECH_NONE = 0, /* in a SYN-ACK: the server refused the mechanism */
	HK_MECH_UDP = 1,
	HK_MECH_UDPLITE = 2,
	HK_MECH_QUIC = 3,
	/* Not a transport: the connection stays TCP, with the congestion
	 * control its rule names (hk_port_rule.cc). It has a deployed bit like
	 * the others (hookerd registers its BPF algorithms), but no handshake
	 * ever names it: its rules accept and ask for nothing. */
	HK_MECH_TCP_CC = 4,
	HK_MECH__MAX,
};

/* Carried in the SYN (active side) and the SYN-ACK (passive side). Each side
 * announces where its hookerd listens and the token by which it will
 * recognise this connection's datagrams. The SYN names the mechanism the
 * client's rule asks for; the SYN-ACK confirms it, or carries HK_MECH_NONE
 * (and token 0) when the server's rule does not accept it, so the client
 * knows why the connection stays plain TCP. */
struct hk_tcp_opt {
	__u8 kind;       /* HK_TCPOPT_EXP */
	__u8 len;        /* HK_OPT_LEN */
	__be16 exid;     /* HK_EXID */
	__u8 version;    /* HK_VERSION */
	__u8 mech;       /* enum hk_mech */
	__be16 udp_port; /* the sender's hookerd UDP port */
	__be64 token;    /* the sender's token for this connection */
};
/* The same option, with udp_port 0 and the receiving socket's own token, in
 * an ACK that hookerd injects into an established moved socket: a wake-up
 * for its refused writer (hk_lanes.writer_waits). */

/* ---- the Hooker datagram header --------------------------------------- */

#define HK_WIRE_MAGIC 0x484b

enum hk_wire_type {
	HK_WIRE_DATA = 1,  /* payload at a byte offset */
	HK_WIRE_END = 2,   /* the writer finished: stream ends at offset */
	HK_WIRE_ACK = 3,   /* delivered up to offset; window in len */
	HK_WIRE_RESET = 4, /* the connection is dead, tear it down */
};

/* hk_wire_hdr.flags */
#define HK_WIRE_F_PROBE 0x01 /* ACK: answer with an ACK at once */
#define HK_WIRE_F_REPLY 0x02 /* ACK: the answer to a probe */
#define HK_WIRE_F_END_SEEN 0x04 /* ACK: the END frame arrived */
/* ACK: a connection's opening datagram (the connecting side sends it at
 * once, and again until it hears back): it opens a NAT's mapping before
 * the accepting side sends, tells that side where the connecting one
 * really is, and proves the path carries UDP. Answered with a plain ACK
 * at once (not a REPLY: that answers only a probe about lost bytes). */
#define HK_WIRE_F_HELLO 0x08
/* A path probe is a HELLO ACK with token 0 and no payload: hookerd sends it
 * to a peer it remembers as unreachable by UDP (hk_udp_blocked), and the
 * peer's hookerd answers it with HK_WIRE_F_REPLY added. It names no
 * connection, so the ingress program lets it through on its own terms. */
#define HK_WIRE_PROBE_TOKEN 0

/* Network byte order. The token is the receiver's: each side demultiplexes
 * on a token it chose itself. */
struct hk_wire_hdr {
	__be16 magic;   /* HK_WIRE_MAGIC */
	__u8 version;   /* HK_VERSION */
	__u8 type;      /* enum hk_wire_type */
	__u8 mech;      /* enum hk_mech */
	__u8 flags;
	__be16 len;     /* DATA: payload bytes that follow */
	__be64 token;   /* receiver's token */
	__be64 offset;  /* DATA: first byte; END: length; ACK: received in order */
	__be32 window;  /* ACK: bytes the receiver accepts past offset */
	__u32 reserved;
};

/* ---- connection identity ---------------------------------------------- */

/* Key of the SOCKHASH: a socket's own view of its 4-tuple. IPv4 addresses
 * sit in addr[0] (network order) with the rest zero; ports are host order. */
struct hk_flow {
	__u16 family; /* AF_INET or AF_INET6 */
	__u16 lport;
	__u16 rport;
	__u16 pad;
	__u32 laddr[4];
	__u32 raddr[4];
};

/* Per-socket state (SK_STORAGE). On an application socket it says where its
 * sends are redirected and which connection it is; on hookerd's inbound
 * socket it points back at the application socket. */
enum hk_sk_state {
	HK_SK_NONE = 0,
	HK_SK_SYN_SENT = 1, /* option sent, waiting for the SYN-ACK */
	HK_SK_MOVED = 2,    /* payload goes through hookerd */
	HK_SK_PLAIN = 3,    /* negotiated nothing: plain TCP */
	HK_SK_PROXY = 4,    /* hookerd's own socket of a slot */
};

struct hk_sk {
	struct hk_flow target; /* SOCKHASH key to redirect sends to */
	__u64 token;           /* this side's token */
	__u32 redirect_flags;  /* 0 (egress) or BPF_F_INGRESS */
	__u32 slot;
	__u32 state; /* enum hk_sk_state */
	__u32 mech;  /* enum hk_mech: asked for (SYN_SENT), then agreed */
	__u32 rule;  /* hk_rule_ref of the file rule that moved it, 0: a port rule */
	__u32 pad;
};

/* ---- the policy (the `ports` map, keyed by the server's TCP port) ------ */

#define HK_MECH_BIT(m) (1u << (m))

/* One rule: what this host accepts as a server on the port and what it asks
 * for as a client, in one value so each handshake step is one lookup. */
#define HK_CC_NAME_MAX 16 /* TCP_CA_NAME_MAX, with the NUL */

struct hk_port_rule {
	__u8 accept; /* HK_MECH_BIT of each mechanism accepted */
	__u8 prefer; /* the mechanism asked for: the rule's first */
	__u16 pad;
	/* A tcp-cc rule: the TCP congestion control set on the port's
	 * connections, client and server side, NUL-padded; accept and prefer
	 * are then 0 (it moves nothing). Empty in every other rule. */
	char cc[HK_CC_NAME_MAX];
};

/* The server's answer to a SYN asking for `mech`: the mechanism it
 * confirms, or HK_MECH_NONE. Shared so the unit tests check the kernel's
 * decision. */
static inline __u8 hk_answer_mech(const struct hk_port_rule *r, __u8 mech)
{
	if (mech == HK_MECH_NONE || mech >= HK_MECH__MAX ||
	    !(r->accept & HK_MECH_BIT(mech)))
		return HK_MECH_NONE;
	return mech;
}

/* The first mechanism in a HK_MECH_BIT set, or HK_MECH_NONE. */
static inline __u8 hk_first_mech(__u32 set)
{
	for (__u8 m = 1; m < HK_MECH__MAX; m++)
		if (set & HK_MECH_BIT(m))
			return m;
	return HK_MECH_NONE;
}

/* ---- the file's rules (the `rule_sets` map) -------------------------- */

/* The configuration file's [[rule]] tables, compiled: one entry per
 * (destination prefix, source prefix) pair of a rule, in file order; the
 * first entry that matches decides, and only if none does the `ports` map
 * (--redirect, hookerctl policy add) is asked. The source is the client,
 * the destination the server, whichever side looks: a client matches its
 * own address as source, a server the peer's. Addresses are network order,
 * an IPv4 one (or an IPv4-mapped IPv6 socket's) in word 0 with family
 * AF_INET; prefixes are stored masked, with their masks, so a match is
 * eight ANDs. A rule whose action accepts and asks for nothing and sets no
 * congestion control never moves what it matches. */
#define HK_MAX_RULES 256
#define HK_CG_MAX_LEVEL 31 /* cgroup depth a rule can name */

struct hk_rule {
	__u32 dst[4], dst_mask[4];
	__u32 src[4], src_mask[4];
	__u64 cgroup;  /* cgroup id (its directory's inode), 0: any cgroup */
	__u16 port_lo; /* server port range, host order, inclusive */
	__u16 port_hi;
	__u8 family;   /* AF_INET or AF_INET6 if a prefix is given, else 0 */
	__u8 cgroup_level; /* the cgroup's depth under the cgroup v2 root */
	__u16 ref;     /* 1 + the file rule's index (hk_rule_ref) */
	struct hk_port_rule action;
	__u32 pad;
};

#define HK_RULES_CGROUP 1u /* hk_rules.flags: some rule names a cgroup */

/* The whole policy of the file, one map value: hookerd builds a new inner
 * map per load and swaps it into `rule_sets` with one update, so a
 * handshake step sees one policy or the other, never half of one. */
struct hk_rules {
	__u32 n;     /* entries in use */
	__u32 flags; /* HK_RULES_* */
	__u32 gen;   /* which load: hk_rule_ref's upper half */
	__u32 pad;
	struct hk_rule rule[HK_MAX_RULES];
};

/* The server ports some rule names, one bit each: a port rule's port, or a
 * port within a file rule's range. The handshake callbacks of a connection
 * to any other port leave after one look here, so traffic hookerd does not
 * move pays almost nothing for it. A bit set too many only costs the full
 * look (the policy decides); hookerd sets a port's bit before its rule goes
 * in and clears it only after the rule is gone. */
#define HK_PORT_MASK_WORDS (65536 / 64)
struct hk_port_mask {
	__u64 bits[HK_PORT_MASK_WORDS];
};

/* A listener's cgroup, for the rules' cgroup match on the server side. In
 * the SYN-ACK callbacks sock_ops has no socket (skops->sk is NULL for a
 * request socket), so the cgroup of the listener answering is recorded
 * when it starts listening (the sock_ops listen callback, or the
 * listener-following iterator for one opened earlier) and looked up by
 * the connection's network namespace, local port and family. Two
 * listeners on one port and family in one namespace (SO_REUSEPORT, or
 * two local addresses) share an entry: the last one to listen names it. */
struct hk_listener_key {
	__u64 netns;  /* network namespace cookie */
	__u16 port;   /* host order */
	__u16 family; /* the listener's own: AF_INET6 for a dual-stack one */
	__u32 pad;
};

struct hk_listener_cg {
	__u64 cookie; /* the listening socket's: only it removes the entry */
	__u32 level;  /* the cgroup's depth under the cgroup v2 root */
	__u32 pad;
	/* id[i]: the id of its ancestor at depth i (its own at `level`), the
	 * one struct cgroup.ancestors[i] names, to HK_CG_MAX_LEVEL. */
	__u64 id[HK_CG_MAX_LEVEL + 1];
};

/* Listeners recorded at once, on ports a rule may move: past that a new
 * listener is not recorded, and matches no cgroup rule. */
#define HK_MAX_LISTENERS 4096

/* What a moved socket remembers of the rule that moved it. */
static inline __u32 hk_rule_ref(__u32 gen, __u16 ref)
{
	return (gen & 0xffff) << 16 | ref;
}

/* Everything but the cgroup (the kernel reads that from the socket). */
static inline int hk_rule_matches(const struct hk_rule *r, __u8 family,
				  const __u32 *src, const __u32 *dst, __u16 port)
{
	if (port < r->port_lo || port > r->port_hi)
		return 0;
	if (r->family && r->family != family)
		return 0;
	for (int i = 0; i < 4; i++)
		if ((dst[i] & r->dst_mask[i]) != r->dst[i] ||
		    (src[i] & r->src_mask[i]) != r->src[i])
			return 0;
	return 1;
}

/* A slot is a pair of loopback TCP sockets that hookerd keeps ready, so a
 * connection is bound to hookerd inside the kernel, in the established
 * callback, before the application can send a byte. The application's
 * sends are redirected into the slot's `out` socket, which sits at the
 * slot's index in a SOCKMAP (see hk_lanes for the two ways in). */

/* The two lanes of an application's sends into hookerd. The fast lane
 * redirects with BPF_F_INGRESS straight into the receive queue of the
 * slot's `out` socket: no TCP on the way, but nothing there can make the
 * application wait. So once hookerd is HK_FAST_LANE_LIMIT bytes behind,
 * sends take the slow lane instead: egress through `out`, over loopback,
 * into `in`, where the slot's small TCP buffers block the application
 * until hookerd catches up.
 * Order: the lanes take turns. The switch to slow happens in a verdict;
 * hookerd that sees the slow mode, and no fast transfer still under way
 * (a thread's fast message is under way until its next verdict or the end
 * of its send), drains the fast lane and then reads the slow one. The
 * switch back happens only when no send that went slow is running and
 * hookerd has read every byte the finished sends returned: the
 * sock_send_length tracepoint counts those exactly, whatever part of a
 * non-blocking send the slow lane refused.
 * One entry per slot, in an mmap-able array. */
#define HK_LANE_SLOW 1ull /* in mode; the other bits count switches */
#define HK_FAST_LANE_LIMIT (2u << 20)

/* One thread's send on a moved socket, from its first verdict to the
 * tracepoint at its end. */
struct hk_send {
	__u32 slot;
	__u32 pad;
	__u64 routed;  /* by either lane */
	__u64 landing; /* the last message, if fast and maybe still moving */
	__u64 slow;    /* by the slow lane */
};

struct hk_lanes {
	__u64 mode; /* HK_LANE_SLOW | switches << 1 (kernel) */
	__u64 sent; /* bytes the finished sends returned (kernel) */
	__u64 read; /* bytes hookerd took from the lanes (hookerd) */
	/* The send running now is kept here, without a map operation; a
	 * second thread sending at the same time goes in the `sends` hash
	 * (keyed by pid_tgid), and the sums of those in others_*. */
	__u64 owner; /* pid_tgid of that send's thread, 0 if none (kernel) */
	struct hk_send own;
	__u64 others_routed, others_landing, others_slow;
	/* A send the slow lane refused (EAGAIN, or a part of it): its writer
	 * waits for EPOLLOUT on its own socket, which nothing in the kernel
	 * sends it, since that socket itself has room. The kernel sets it and
	 * tells hookerd (HK_EV_WRITER_WAITS); hookerd clears it and wakes the
	 * writer once the slot has room again (on_wake_ack, src/app/inject.cpp). */
	__u64 writer_waits;
};

/* Token table: what the ingress program checks and what hookerd frees
 * when a half-open handshake never completes. */
enum hk_token_state {
	HK_TOKEN_EMBRYONIC = 1, /* SYN-ACK sent, not yet established */
	HK_TOKEN_LIVE = 2,
};

struct hk_token {
	__u32 slot;
	__u32 state; /* enum hk_token_state */
	__u64 created_ns;
};

/* A handshake our SYN-ACK accepted, until it is established (the
 * redirector's `embryos`, by the tuple as on the wire). The sequence numbers
 * are those of the client's last handshake ACK: when that ACK is lost, the
 * client's bytes still cross through hookerd, and hookerd completes the
 * handshake with the ACK TCP would have taken from the first data segment. */
struct hk_embryo {
	__u64 token;
	__u32 seq; /* the client's next sequence number (the SYN-ACK's ack) */
	__u32 ack; /* the server's: its SYN-ACK's sequence number + 1 */
};

/* FIN-ACK guard, keyed by the tuple as seen on the wire (IPv4-mapped sockets
 * in IPv4 form), from the local socket's side. While an application that
 * shut down writing still waits for the peer's bytes, the peer TCP's ACK of
 * its FIN is dropped: the FIN_WAIT1 -> FIN_WAIT2 wake-up would make a
 * blocking recv() on a sockmap socket return EAGAIN (tcp_bpf_recvmsg does
 * not wait again). The peer's own FIN, held until its bytes are delivered,
 * acknowledges the FIN too. */
struct hk_fin_guard {
	__u32 ack_seq; /* the ACK that acknowledges our FIN, host order */
	__u32 pad;
	__u64 since_ns;
};

/* ---- peers that UDP does not reach ------------------------------------ */

/* Key of the `udp_blocked` map: a peer host as the wire shows it (an
 * IPv4-mapped address in IPv4 form, in addr[0]), network order. */
struct hk_peer_key {
	__u32 family; /* AF_INET or AF_INET6 */
	__u32 addr[4];
};

/* A peer whose hookerd was never heard from over UDP (a firewall that
 * passes TCP and drops UDP): until `until_ns` (bpf_ktime_get_ns, i.e.
 * CLOCK_MONOTONIC) neither side of a handshake with it offers Hooker, so
 * its connections stay plain TCP. After that the next connection tries
 * UDP again; hookerd writes the entries and removes stale ones. */
struct hk_udp_blocked {
	__u64 until_ns;
	__u64 since_ns; /* when it was marked, for hookerctl */
	/* hookerd's own: where it probes the path (the peer hookerd's port and
	 * the mechanism whose socket sends), and how many probes went out. */
	__u16 port;
	__u8 mech;
	__u8 pad;
	__u32 probes;
};

#define HK_MAX_BLOCKED_PEERS 4096

/* ---- events to hookerd (ring buffer) ---------------------------------- */

enum hk_event_type {
	HK_EV_BOUND = 1,  /* a connection was moved onto a slot */
	HK_EV_SHUT_WR = 2, /* the application will write no more */
	HK_EV_CLOSED = 3, /* the application socket is gone */
	HK_EV_BIND_FAILED = 4, /* negotiated but could not be moved */
	HK_EV_WRITER_WAITS = 5, /* hk_lanes.writer_waits went up (slot only) */
	HK_EV_NEED_MECH = 6, /* a connection wanted an undeployed mechanism
			      * (mech, app); it stayed plain TCP */
	HK_EV_CONNECTING = 7, /* a SYN proposes a mechanism whose per-peer
			       * state starts early (quic's handshake: mech,
			       * app); nothing is bound yet */
	HK_EV_FELL_BACK = 8, /* a connection that asked for (client) or was
			      * asked for (server) mechanism `mech` stays
			      * plain TCP: hk_event.why says why (app, active) */
};

/* hk_event.why of HK_EV_BIND_FAILED (low 8 bits): the step of binding a
 * connection to its slot that failed (HK_CNT_BIND_FAILED). */
enum hk_bind_step {
	HK_BIND_LANES = 1,    /* the slot has no lanes entry */
	HK_BIND_TOKEN = 2,    /* the token could not go live */
	HK_BIND_SOCKHASH = 3, /* the SOCKHASH refused the socket */
};

/* hk_event.why of HK_EV_FELL_BACK: the handshake's outcome, as counted by
 * HK_CNT_PEER_NO_HOOKER, HK_CNT_PEER_REFUSED_MECH, HK_CNT_MECH_NOT_ACCEPTED. */
enum hk_fallback {
	HK_FB_PEER_NO_HOOKER = 1, /* client: the SYN-ACK had no option */
	HK_FB_PEER_REFUSED = 2,   /* client: the server refused the mechanism */
	HK_FB_NOT_ACCEPTED = 3,   /* server: this side's rule refuses it */
};

struct hk_event {
	__u32 type; /* enum hk_event_type */
	__u32 slot;
	struct hk_flow app;  /* the application socket's tuple */
	__u64 token;         /* local token */
	__u64 peer_token;
	__u64 cookie;        /* application socket cookie */
	__u16 peer_port;     /* peer hookerd's UDP port, host order */
	__u8 active;         /* 1 if this side connected */
	__u8 mech;
	/* TCP sequence numbers at establishment: a moved connection sends no
	 * TCP payload, so they only move by one for a FIN. hookerd needs them
	 * to reset the connection the way TCP would. */
	__u32 snd_nxt;
	__u32 rcv_nxt;
	/* The TCP connection's MSS at establishment (mss_cache: the path's
	 * MTU less the IP and TCP headers and options): what fits on its path,
	 * so hookerd sizes the connection's datagrams by it. */
	__u32 mss;
	__u32 rule; /* hk_sk.rule: whose options the mechanism takes */
	__u32 why;  /* HK_EV_FELL_BACK: enum hk_fallback; HK_EV_BIND_FAILED:
		     * enum hk_bind_step, and the kernel's errno above the
		     * low 8 bits; else 0 */
};

/* ---- counters (PERCPU_ARRAY, one per reason) -------------------------- */

enum hk_counter {
	HK_CNT_SYN_OPT_SENT,      /* SYNs that proposed Hooker */
	HK_CNT_SYNACK_OPT_SENT,   /* SYN-ACKs that accepted */
	HK_CNT_MOVED_ACTIVE,      /* connections moved, connecting side */
	HK_CNT_MOVED_PASSIVE,     /* connections moved, accepting side */
	HK_CNT_PEER_NO_HOOKER,    /* SYN-ACK without our option: plain TCP */
	HK_CNT_NO_SLOT,           /* pool empty: connection left plain */
	HK_CNT_BIND_FAILED,       /* SOCKHASH insert failed after agreeing */
	HK_CNT_SYNCOOKIE,         /* listener in SYN-cookie mode: plain */
	HK_CNT_REDIRECT_MISS,     /* app's send: its slot is gone */
	HK_CNT_INJECT_MISS,       /* hookerd's write: the app socket is gone */
	HK_CNT_EVENT_LOST,        /* ring buffer full */
	HK_CNT_SLOT_TAKEN,        /* slots the kernel took from the pool */
	HK_CNT_SLOT_RETURNED,     /* slots it gave back unused */
	HK_CNT_XDP_PASS,          /* valid datagrams handed to hookerd */
	HK_CNT_XDP_SHORT,         /* too short for a Hooker header */
	HK_CNT_XDP_BAD_MAGIC,
	HK_CNT_XDP_BAD_VERSION,
	HK_CNT_XDP_BAD_LEN,       /* header length disagrees with UDP length */
	HK_CNT_XDP_UNKNOWN_TOKEN, /* no live connection has this token */
	HK_CNT_XDP_FIN_ACK_HELD,  /* ACK of our FIN dropped (see hk_fin_guard) */
	HK_CNT_LANE_SLOW,         /* switches to the slow lane (hk_lanes) */
	HK_CNT_LANE_FAST,         /* and back */
	HK_CNT_SENDS_FULL,        /* app's send refused: too many threads in sends */
	HK_CNT_WRITER_WOKEN,      /* refused writers woken (hookerd's wake ACK) */
	HK_CNT_WAKE_FAILED,       /* a wake ACK the kernel could not act on */
	HK_CNT_MECH_NOT_ACCEPTED, /* server: the SYN asked for a mechanism the rule refuses */
	HK_CNT_PEER_REFUSED_MECH, /* client: the SYN-ACK refused the mechanism asked */
	HK_CNT_MECH_NOT_DEPLOYED, /* either side: the rule's mechanism is not deployed */
	HK_CNT_CC_SET,            /* tcp-cc: connections given their rule's congestion control */
	HK_CNT_CC_FAILED,         /* tcp-cc: the kernel refused it (not registered, not allowed) */
	HK_CNT_PEER_UDP_BLOCKED,  /* either side: the peer is in udp_blocked, left plain */
	HK_CNT_XDP_PATH_PROBE,    /* path probes (HK_WIRE_PROBE_TOKEN) let through */
	HK_CNT__MAX,
};

#define HK_COUNTER_NAMES                                                       \
	"syn_opt_sent", "synack_opt_sent", "moved_active", "moved_passive",    \
	    "peer_no_hooker", "no_slot", "bind_failed", "syncookie",           \
	    "redirect_miss", "inject_miss", "event_lost", "slot_taken", "slot_returned",      \
	    "xdp_pass", "xdp_drop_short",       \
	    "xdp_drop_bad_magic", "xdp_drop_bad_version", "xdp_drop_bad_len",  \
	    "xdp_drop_unknown_token", "xdp_fin_ack_held", "lane_to_slow",      \
	    "lane_to_fast", "sends_full", "writers_woken", "wake_failed",      \
	    "mech_not_accepted", "peer_refused_mech", "mech_not_deployed",   \
	    "cc_set", "cc_failed", "peer_udp_blocked", "xdp_path_probe"

#define HK_MAX_SLOTS 65536
#define HK_MAX_PORTS 1024

#endif /* HOOKER_ABI_H */
