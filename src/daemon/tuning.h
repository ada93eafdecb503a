// hookerd's tunables, in one place, each with why it has its value.
#pragma once

#include <cstddef>
#include <cstdint>

namespace hooker {

constexpr uint32_t kTickMs = 5;                 // timer: delivery retries, loss checks
constexpr size_t kStashLimit = 1 << 20;         // early datagrams, all tokens together
constexpr uint32_t kMaxWindow = 4 << 20;        // credit one connection may get
constexpr uint64_t kRxBudget = 24ull << 20;     // payload the UDP receive buffer holds
constexpr uint32_t kPoolLow = 32, kPoolBatch = 32;  // free slots kept ready for bursts
constexpr uint64_t kAppQueue = 1 << 20;         // written to an application, not yet read
constexpr uint32_t kSlowLaneBuffer = 64 << 10;  // slot TCP buffers (the kernel doubles them)
constexpr uint64_t kEmbryonicNs = 75ull * 1000 * 1000 * 1000;  // > all SYN-ACK retries
constexpr uint64_t kGuardNs = 60ull * 1000 * 1000 * 1000;      // longest FIN-ACK hold

}  // namespace hooker
