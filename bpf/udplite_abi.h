/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* What udplite.bpf.c shares with hookerd's udplite (ebpf) mechanism
 * (src/mech/udplite/ebpf.cpp): its constants and its counters. Its own
 * header, apart from hooker_abi.h: the object is loaded only while the
 * mechanism is deployed, and nothing else reads these. */
#ifndef HOOKER_UDPLITE_ABI_H
#define HOOKER_UDPLITE_ABI_H

#define HK_LITE_PROTO 136   /* IPPROTO_UDPLITE (RFC 3828) */
#define HK_LITE_HEADER 8    /* the UDP-Lite header */
#define HK_LITE_FRAME 32    /* Hooker's frame header (wire::kHeader) */
/* What the checksum covers on the way out, and the least accepted on the
 * way in: the UDP-Lite header and the frame header (token, offset). */
#define HK_LITE_COVERAGE (HK_LITE_HEADER + HK_LITE_FRAME)
/* The receiver's token in the frame header (hk_wire_hdr.token). */
#define HK_LITE_TOKEN_AT 8
/* Connections with a coverage of their own (udplite:cov=N) at once; more
 * are reset as they open, loudly. */
#define HK_LITE_COVERED_MAX 65536

/* One PERCPU_ARRAY slot each, summed by hookerd (its status counters, under
 * the names in src/mech/udplite/ebpf.cpp). Every drop has its reason. */
enum hk_lite_counter {
	HK_LITE_OUT = 0,          /* UDP from the internal port, sent as UDP-Lite */
	HK_LITE_IN,               /* UDP-Lite to --port, handed over as UDP */
	HK_LITE_OUT_SHORT,        /* dropped: shorter than the coverage */
	HK_LITE_OUT_FRAGMENT,     /* dropped: an IP fragment (never sent by hookerd) */
	HK_LITE_OUT_GSO,          /* dropped: a GSO packet (GSO is off on the socket) */
	HK_LITE_IN_SHORT,         /* dropped: no whole UDP-Lite header */
	HK_LITE_IN_FRAGMENT,      /* dropped: an IP fragment */
	HK_LITE_IN_BAD_COVERAGE,  /* dropped: coverage 1..7 or past the datagram */
	HK_LITE_IN_LOW_COVERAGE,  /* dropped: covers less than the headers */
	HK_LITE_IN_TOO_LONG,      /* dropped: covers more than the program sums */
	HK_LITE_IN_BAD_CHECKSUM,  /* dropped: the checksum does not match */
	HK_LITE__MAX,
};

#endif
