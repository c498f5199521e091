// Endian-neutral integer coding: the one place where integers meet the wire.
//
// Writers append little-endian fixed-width integers and ULEB128 varints to a
// byte vector (or store them at a pointer the caller has sized). ByteReader is
// a cursor over a span whose every read is length-checked: a short or
// malformed input yields a kTruncated / kCorrupt Status, never an
// out-of-bounds read. See docs/protocol.md, "Integer coding".
//
// Pure functions and value types; thread-compatible (no shared state).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace romulus::protocol {

using Bytes = std::vector<uint8_t>;
using ByteSpan = std::span<const uint8_t>;

// ---- Fixed-width little-endian stores/loads at a raw pointer (caller checks room).

inline void store_u16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
inline void store_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void store_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline uint64_t load_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// ---- Appending writers.

inline void put_u8(Bytes& out, uint8_t v) { out.push_back(v); }
inline void put_u16(Bytes& out, uint16_t v) {
  const size_t n = out.size();
  out.resize(n + 2);
  store_u16(out.data() + n, v);
}
inline void put_u32(Bytes& out, uint32_t v) {
  const size_t n = out.size();
  out.resize(n + 4);
  store_u32(out.data() + n, v);
}
inline void put_i32(Bytes& out, int32_t v) { put_u32(out, static_cast<uint32_t>(v)); }
inline void put_u64(Bytes& out, uint64_t v) {
  const size_t n = out.size();
  out.resize(n + 8);
  store_u64(out.data() + n, v);
}
inline void put_bytes(Bytes& out, ByteSpan b) { out.insert(out.end(), b.begin(), b.end()); }

// Maximum bytes of a ULEB128 encoding of a uint64_t.
inline constexpr size_t kMaxVarint64Bytes = 10;

// Writes v as ULEB128 at p (room for kMaxVarint64Bytes); returns bytes written.
inline size_t store_varint(uint8_t* p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = static_cast<uint8_t>(v | 0x80);
    v >>= 7;
  }
  p[n++] = static_cast<uint8_t>(v);
  return n;
}
inline size_t varint_length(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}
inline void put_varint(Bytes& out, uint64_t v) {
  uint8_t tmp[kMaxVarint64Bytes];
  out.insert(out.end(), tmp, tmp + store_varint(tmp, v));
}

// Decodes a ULEB128 value from [p, end). On success stores it in *v and returns
// the number of bytes read (1..10); returns 0 if the input ends inside the
// varint, and -1 if it is over-long (more than 10 bytes, or bits past 64).
inline int load_varint(const uint8_t* p, const uint8_t* end, uint64_t* v) {
  uint64_t result = 0;
  for (int i = 0; i < static_cast<int>(kMaxVarint64Bytes); ++i) {
    if (p + i >= end) return 0;
    const uint64_t byte = p[i];
    if (i == 9 && byte > 1) return -1;  // would overflow 64 bits
    result |= (byte & 0x7f) << (7 * i);
    if ((byte & 0x80) == 0) {
      *v = result;
      return i + 1;
    }
  }
  return -1;
}

// A bounds-checked cursor over a byte span. Every read either succeeds fully
// or fails with a Status naming `what` was being read; the cursor does not
// advance on failure.
class ByteReader {
 public:
  explicit ByteReader(ByteSpan data) : data_(data) {}

  size_t remaining() const { return data_.size() - pos_; }
  size_t position() const { return pos_; }
  bool empty() const { return remaining() == 0; }
  ByteSpan rest() const { return data_.subspan(pos_); }

  Status read_u8(uint8_t* v, const char* what) {
    ROMULUS_RETURN_IF_ERROR(need(1, what));
    *v = data_[pos_++];
    return Status::ok();
  }
  Status read_u16(uint16_t* v, const char* what) {
    ROMULUS_RETURN_IF_ERROR(need(2, what));
    *v = load_u16(data_.data() + pos_);
    pos_ += 2;
    return Status::ok();
  }
  Status read_u32(uint32_t* v, const char* what) {
    ROMULUS_RETURN_IF_ERROR(need(4, what));
    *v = load_u32(data_.data() + pos_);
    pos_ += 4;
    return Status::ok();
  }
  Status read_i32(int32_t* v, const char* what) {
    uint32_t u = 0;
    ROMULUS_RETURN_IF_ERROR(read_u32(&u, what));
    *v = static_cast<int32_t>(u);
    return Status::ok();
  }
  Status read_u64(uint64_t* v, const char* what) {
    ROMULUS_RETURN_IF_ERROR(need(8, what));
    *v = load_u64(data_.data() + pos_);
    pos_ += 8;
    return Status::ok();
  }
  Status read_varint(uint64_t* v, const char* what) {
    const uint8_t* p = data_.data() + pos_;
    const int n = load_varint(p, data_.data() + data_.size(), v);
    if (n == 0) return Status::truncated(std::string(what) + ": input ends inside a varint");
    if (n < 0) return Status::corrupt(std::string(what) + ": varint longer than 64 bits");
    pos_ += static_cast<size_t>(n);
    return Status::ok();
  }
  // A view of the next n bytes (valid as long as the underlying data).
  Status read_bytes(size_t n, ByteSpan* out, const char* what) {
    ROMULUS_RETURN_IF_ERROR(need(n, what));
    *out = data_.subspan(pos_, n);
    pos_ += n;
    return Status::ok();
  }
  Status skip(size_t n, const char* what) {
    ROMULUS_RETURN_IF_ERROR(need(n, what));
    pos_ += n;
    return Status::ok();
  }

 private:
  Status need(size_t n, const char* what) const {
    if (remaining() < n) {
      return Status::truncated(std::string(what) + ": need " + std::to_string(n) + " bytes, have " +
                               std::to_string(remaining()));
    }
    return Status::ok();
  }

  ByteSpan data_;
  size_t pos_ = 0;
};

}  // namespace romulus::protocol
