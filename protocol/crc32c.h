// CRC32C (Castagnoli), the checksum of every checkpoint's tail
// (docs/protocol.md, "Chunks").
//
// crc32c_extend() continues a checksum over more bytes, so a checkpoint that
// arrives or is produced in pieces is checksummed without being assembled:
//   crc32c(a || b) == crc32c_extend(crc32c(a), b).
// On x86-64 with SSE4.2 the hardware instruction is used (chosen once, at the
// first call); elsewhere a table-driven Boost.CRC implementation. Both give the
// same results; crc32c_portable() exposes the fallback so tests can compare.
//
// Pure functions; safe to call from any thread.
#pragma once

#include <cstdint>

#include "protocol/coding.h"

namespace romulus::protocol {

// Returns the CRC32C of the concatenation of the data whose CRC32C is `crc`
// and `data`. crc32c_extend(0, x) == crc32c(x).
uint32_t crc32c_extend(uint32_t crc, ByteSpan data);

inline uint32_t crc32c(ByteSpan data) { return crc32c_extend(0, data); }

// The portable (Boost.CRC) path, whatever the CPU supports. For tests.
uint32_t crc32c_extend_portable(uint32_t crc, ByteSpan data);

// True if crc32c_extend() uses the SSE4.2 instruction on this machine.
bool crc32c_hardware_available();

}  // namespace romulus::protocol
