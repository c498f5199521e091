// The handshake: the first bytes of every connection (docs/protocol.md,
// "Handshake").
//
// The primary sends a Hello describing its guest (page geometry, arena size,
// session, codecs it may use); the backup answers with a Reply that accepts
// or refuses, and says which checkpoint it holds. Both messages share a fixed
// 10-byte header (magic, version, body length) so that a peer of another
// protocol version is recognised, and refused, from the header alone, before
// any of its body is interpreted.
//
// Parsers are incremental over whatever bytes have arrived: they return
// std::nullopt while the message is incomplete, the message and the number of
// bytes it used once complete, or an error. Input is hostile: the body length
// is checked against kMaxHandshakeBody before it is waited for.
//
// Pure functions over value types; safe from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "protocol/coding.h"
#include "protocol/page.h"
#include "common/status.h"
#include "protocol/wire_format.h"

namespace romulus::protocol {

// Magic (4) + u16 version + u32 body length.
inline constexpr size_t kHandshakeHeaderSize = 10;
// At most this many codec ids in a Hello.
inline constexpr size_t kMaxHelloCodecs = 16;

struct Hello {
  uint16_t version = kProtocolVersion;
  uint32_t page_size = kPageSize;
  uint8_t word_size = kWordSize;
  uint64_t guest_page_count = 0;  // pages in the arena
  uint64_t session_id = 0;        // names the image this primary streams
  std::vector<CodecId> codecs;    // codecs the primary may use (raw wire values)
  uint32_t flags = 0;             // reserved, 0

  friend bool operator==(const Hello&, const Hello&) = default;
};

struct Reply {
  uint16_t version = kProtocolVersion;
  bool accept = false;
  uint64_t last_committed_epoch = 0;  // 0 = the backup holds no committed image
  uint64_t committed_session_id = 0;  // session of that image, 0 = none
  std::string reason;                 // why refused (empty when accepted)

  friend bool operator==(const Reply&, const Reply&) = default;
};

// What the receiving side (the backup) can accept.
struct LocalGeometry {
  uint32_t page_size = kPageSize;
  uint8_t word_size = kWordSize;
  uint64_t guest_page_count = 0;
  std::vector<CodecId> codecs = {CodecId::kNone, CodecId::kRunSkip, CodecId::kXbzrle};
};

template <typename T>
using Parsed = std::optional<std::pair<T, size_t>>;  // message + bytes used; nullopt = need more

Bytes encode_hello(const Hello& hello);
// A reason longer than kMaxRefusalReason is cut to that many bytes (at a UTF-8
// character boundary).
Bytes encode_reply(const Reply& reply);

// kRefused on a version mismatch (from the header alone), kCorrupt on a bad
// magic, an oversized or malformed body.
Result<Parsed<Hello>> parse_hello(ByteSpan data);
Result<Parsed<Reply>> parse_reply(ByteSpan data);

// OK if a backup with geometry `ours` can receive the stream described by
// `theirs`; otherwise kRefused saying what differs, e.g. "arena size
// mismatch: primary has 65536 pages (256 MiB), backup expects 16384 pages
// (64 MiB)". The caller adds what the operator should change (this layer
// knows no command-line options).
Status check_hello_compatible(const Hello& theirs, const LocalGeometry& ours);

// "256 MiB" / "12 KiB" / "1.5 GiB"-free formatting used in the messages above:
// the largest binary unit that divides the size exactly.
std::string format_arena_size(uint64_t bytes);

}  // namespace romulus::protocol
