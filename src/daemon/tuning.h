// hookerd's tunables, in one place, each with why it has its value.
#pragma once

#include <cstddef>
#include <cstdint>

namespace hooker {

// (The udp mechanism's are in mech/udp/udp.h.)
constexpr uint32_t kTickMs = 5;                 // timer: delivery retries, the lanes
// Free slots kept ready: the kernel takes one per new connection at softirq
// speed, hookerd refills between loop turns, so a burst of connections (50
// at once from redis-benchmark) must find them made already. A connection
// that finds none stays plain TCP (no_slot), and the number kept ready
// doubles, up to kPoolReadyMax.
constexpr uint32_t kPoolStart = 32;     // made before `ready`: start-up stays fast
constexpr uint32_t kPoolReady = 128;    // then kept free, refilled every tick
constexpr uint32_t kPoolReadyMax = 4096;
constexpr uint32_t kPoolBatch = 64;     // made per refill, to keep loop turns short
constexpr uint64_t kAppQueue = 1 << 20;         // written to an application, not yet read
constexpr uint32_t kSlowLaneBuffer = 64 << 10;  // slot TCP buffers (the kernel doubles them)
constexpr uint64_t kEmbryonicNs = 75ull * 1000 * 1000 * 1000;  // > all SYN-ACK retries
// The FIN hold's queue: what may wait for hookerd, FINs of connections
// ending at once plus their retransmissions (about 1 KB each in the socket).
// Beyond it they are dropped and TCP sends them again, later.
constexpr uint32_t kFinQueueMaxlen = 65536;
constexpr int kFinQueueBuffer = 4 << 20;  // the kernel doubles it
constexpr uint64_t kGuardNs = 60ull * 1000 * 1000 * 1000;      // longest FIN-ACK hold

// Whether kernel state stamped at `since_ns` (bpf_ktime_get_ns) is older than
// `age_ns` at `now_ns` (CLOCK_MONOTONIC, read before the map walk). State the
// kernel made during the walk is stamped after `now_ns`: young, not 2^64 ns
// old, as the unsigned difference would have it (a SYN-ACK's token swept
// that way left its connection unbound at the server, reset at the client).
constexpr bool older_than(uint64_t now_ns, uint64_t since_ns, uint64_t age_ns) {
  return since_ns < now_ns && now_ns - since_ns > age_ns;
}

}  // namespace hooker
