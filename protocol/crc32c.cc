// CRC32C: SSE4.2 path with three interleaved streams, Boost.CRC fallback.
//
// Why interleave: the crc32 instruction has a latency of 3 cycles and a
// throughput of 1 per cycle, so one dependency chain uses a third of the unit.
// Long inputs are split into three equal blocks whose CRCs run side by side,
// then combined: crc(A||B) = shift(crc(A), |B|) ^ crc(B), where shift() is a
// multiplication by x^(8|B|) mod P (carry-less, in software; a few hundred
// cycles per 192 KiB, so negligible).
#include "protocol/crc32c.h"

#include <boost/crc.hpp>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace romulus::protocol {
namespace {

using BoostCrc32c = boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true>;

// ---- GF(2) helpers for combining CRCs of adjacent blocks (zlib's crc32_combine
// method, reflected polynomial 0x82F63B78).

constexpr uint32_t kReflectedPoly = 0x82F63B78u;

// Multiplies a (x^0..x^31 reflected) by b modulo P.
uint32_t gf2_multiply(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (int i = 0; i < 32; ++i) {
    if (a & 0x80000000u) product ^= b;
    a <<= 1;
    b = (b & 1) ? (b >> 1) ^ kReflectedPoly : b >> 1;
  }
  return product;
}

// x^(8 * n) mod P, as a reflected polynomial.
uint32_t x_pow_8n(size_t n) {
  uint32_t result = 0x80000000u;  // x^0
  uint32_t square = 0x00800000u;  // x^8
  while (n != 0) {
    if (n & 1) result = gf2_multiply(square, result);
    square = gf2_multiply(square, square);
    n >>= 1;
  }
  return result;
}

#if defined(__x86_64__)

__attribute__((target("sse4.2"))) uint32_t hw_update(uint32_t state, const uint8_t* p, size_t n) {
  uint64_t s = state;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    s = _mm_crc32_u64(s, w);
    p += 8;
    n -= 8;
  }
  uint32_t s32 = static_cast<uint32_t>(s);
  while (n > 0) {
    s32 = _mm_crc32_u8(s32, *p++);
    --n;
  }
  return s32;
}

// Three streams over equal blocks, combined. Worth it only for long inputs.
constexpr size_t kInterleaveMin = 3 * 1024;

__attribute__((target("sse4.2"))) uint32_t hw_update_interleaved(uint32_t state, const uint8_t* p,
                                                                 size_t n) {
  while (n >= kInterleaveMin) {
    // Block length: a multiple of 8, as large as possible but bounded so the
    // shift operator (computed per block length) is reused for most of a big
    // input.
    size_t block = (n / 3) & ~size_t{7};
    if (block > 64 * 1024) block = 64 * 1024;
    uint64_t a = state, b = 0, c = 0;
    const uint8_t* pa = p;
    const uint8_t* pb = p + block;
    const uint8_t* pc = p + 2 * block;
    for (size_t i = 0; i < block; i += 8) {
      uint64_t wa, wb, wc;
      std::memcpy(&wa, pa + i, 8);
      std::memcpy(&wb, pb + i, 8);
      std::memcpy(&wc, pc + i, 8);
      a = _mm_crc32_u64(a, wa);
      b = _mm_crc32_u64(b, wb);
      c = _mm_crc32_u64(c, wc);
    }
    // Streams b and c started from state 0; their contribution is linear, so
    // state(A||B) = shift(state(A), |B|) ^ state_from_zero(B).
    const uint32_t op = x_pow_8n(block);
    uint32_t s = gf2_multiply(op, static_cast<uint32_t>(a)) ^ static_cast<uint32_t>(b);
    s = gf2_multiply(op, s) ^ static_cast<uint32_t>(c);
    state = s;
    p += 3 * block;
    n -= 3 * block;
  }
  return hw_update(state, p, n);
}

bool detect_hardware() { return __builtin_cpu_supports("sse4.2"); }

#else

bool detect_hardware() { return false; }

#endif

uint32_t reverse_bits(uint32_t v) {
  uint32_t r = 0;
  for (int i = 0; i < 32; ++i) r |= ((v >> i) & 1u) << (31 - i);
  return r;
}

bool hardware() {
  static const bool has = detect_hardware();  // immutable after first use
  return has;
}

}  // namespace

uint32_t crc32c_extend_portable(uint32_t crc, ByteSpan data) {
  // Boost reflects the initial remainder it is given; the running state of a
  // reflected CRC is already reflected, so hand it the reflected value back.
  BoostCrc32c engine(reverse_bits(crc ^ 0xFFFFFFFFu));
  engine.process_bytes(data.data(), data.size());
  return engine.checksum();
}

bool crc32c_hardware_available() { return hardware(); }

uint32_t crc32c_extend(uint32_t crc, ByteSpan data) {
#if defined(__x86_64__)
  if (hardware()) return ~hw_update_interleaved(~crc, data.data(), data.size());
#endif
  return crc32c_extend_portable(crc, data);
}

}  // namespace romulus::protocol
