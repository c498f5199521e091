#include "protocol/handshake.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace romulus::protocol {
namespace {

struct Header {
  uint16_t version;
  uint32_t body_length;
};

// The fixed header (magic, version, body length) followed by the body. Sized
// once and stored in place: g++ 12 at -O3 misreads a range insert into an
// empty vector as an overflow (-Wstringop-overflow).
Bytes frame(const uint8_t (&magic)[4], uint16_t version, const Bytes& body) {
  Bytes out(kHandshakeHeaderSize + body.size());
  std::memcpy(out.data(), magic, 4);
  store_u16(out.data() + 4, version);
  store_u32(out.data() + 6, static_cast<uint32_t>(body.size()));
  if (!body.empty()) std::memcpy(out.data() + kHandshakeHeaderSize, body.data(), body.size());
  return out;
}

// Reads the fixed header if present. `what` is "hello" or "reply".
Result<std::optional<Header>> parse_header(ByteSpan data, const uint8_t (&magic)[4],
                                           const char* what) {
  // Check the magic as soon as its bytes arrive, so a wrong peer (an HTTP
  // client, an old protocol) is told off without waiting for 10 bytes.
  const size_t have = std::min<size_t>(data.size(), 4);
  if (have > 0 && std::memcmp(data.data(), magic, have) != 0) {
    return Status::corrupt(fmt::format("{}: bad magic (expected \"{}\")", what,
                                       std::string(reinterpret_cast<const char*>(magic), 4)));
  }
  if (data.size() < kHandshakeHeaderSize) return std::optional<Header>();
  Header h{load_u16(data.data() + 4), load_u32(data.data() + 6)};
  if (h.version != kProtocolVersion) {
    return Status::refused(fmt::format(
        "protocol version mismatch: peer speaks version {}, this side speaks version {}", h.version,
        kProtocolVersion));
  }
  if (h.body_length > kMaxHandshakeBody) {
    return Status::corrupt(
        fmt::format("{}: body length {} exceeds limit {}", what, h.body_length, kMaxHandshakeBody));
  }
  return std::optional<Header>(h);
}

Status trailing_check(const ByteReader& r, const char* what) {
  if (!r.empty()) {
    return Status::corrupt(
        fmt::format("{}: {} unexpected bytes after the body", what, r.remaining()));
  }
  return Status::ok();
}

// Largest prefix of s no longer than max that does not split a UTF-8 sequence.
std::string_view cut_utf8(std::string_view s, size_t max) {
  if (s.size() <= max) return s;
  size_t n = max;
  while (n > 0 && (static_cast<uint8_t>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

}  // namespace

std::string format_arena_size(uint64_t bytes) {
  if (bytes != 0 && bytes % (1ull << 30) == 0) return fmt::format("{} GiB", bytes >> 30);
  if (bytes != 0 && bytes % (1ull << 20) == 0) return fmt::format("{} MiB", bytes >> 20);
  if (bytes % (1ull << 10) == 0) return fmt::format("{} KiB", bytes >> 10);
  return fmt::format("{} bytes", bytes);
}

Bytes encode_hello(const Hello& hello) {
  Bytes body;
  put_u32(body, hello.page_size);
  put_u8(body, hello.word_size);
  put_u64(body, hello.guest_page_count);
  put_u64(body, hello.session_id);
  const size_t n = std::min(hello.codecs.size(), kMaxHelloCodecs);
  put_u8(body, static_cast<uint8_t>(n));
  for (size_t i = 0; i < n; ++i) put_u8(body, static_cast<uint8_t>(hello.codecs[i]));
  put_u32(body, hello.flags);
  return frame(kHelloMagic, hello.version, body);
}

Bytes encode_reply(const Reply& reply) {
  const std::string_view reason = cut_utf8(reply.reason, kMaxRefusalReason);
  Bytes body;
  put_u8(body, reply.accept ? 1 : 0);
  put_u64(body, reply.last_committed_epoch);
  put_u64(body, reply.committed_session_id);
  put_u16(body, static_cast<uint16_t>(reason.size()));
  put_bytes(body, ByteSpan(reinterpret_cast<const uint8_t*>(reason.data()), reason.size()));
  return frame(kReplyMagic, reply.version, body);
}

Result<Parsed<Hello>> parse_hello(ByteSpan data) {
  ROMULUS_ASSIGN_OR_RETURN(std::optional<Header> header, parse_header(data, kHelloMagic, "hello"));
  if (!header || data.size() < kHandshakeHeaderSize + header->body_length) return Parsed<Hello>();
  ByteReader r(data.subspan(kHandshakeHeaderSize, header->body_length));
  Hello h;
  h.version = header->version;
  uint8_t n_codecs = 0;
  ROMULUS_RETURN_IF_ERROR(r.read_u32(&h.page_size, "hello page size"));
  ROMULUS_RETURN_IF_ERROR(r.read_u8(&h.word_size, "hello word size"));
  ROMULUS_RETURN_IF_ERROR(r.read_u64(&h.guest_page_count, "hello guest page count"));
  ROMULUS_RETURN_IF_ERROR(r.read_u64(&h.session_id, "hello session id"));
  ROMULUS_RETURN_IF_ERROR(r.read_u8(&n_codecs, "hello codec count"));
  if (n_codecs > kMaxHelloCodecs) {
    return Status::corrupt(
        fmt::format("hello: {} codecs exceeds limit {}", n_codecs, kMaxHelloCodecs));
  }
  for (uint8_t i = 0; i < n_codecs; ++i) {
    uint8_t c = 0;
    ROMULUS_RETURN_IF_ERROR(r.read_u8(&c, "hello codec id"));
    h.codecs.push_back(static_cast<CodecId>(c));
  }
  ROMULUS_RETURN_IF_ERROR(r.read_u32(&h.flags, "hello flags"));
  ROMULUS_RETURN_IF_ERROR(trailing_check(r, "hello"));
  return Parsed<Hello>(std::make_pair(std::move(h), kHandshakeHeaderSize + header->body_length));
}

Result<Parsed<Reply>> parse_reply(ByteSpan data) {
  ROMULUS_ASSIGN_OR_RETURN(std::optional<Header> header, parse_header(data, kReplyMagic, "reply"));
  if (!header || data.size() < kHandshakeHeaderSize + header->body_length) return Parsed<Reply>();
  ByteReader r(data.subspan(kHandshakeHeaderSize, header->body_length));
  Reply reply;
  reply.version = header->version;
  uint8_t verdict = 0;
  uint16_t reason_length = 0;
  ByteSpan reason;
  ROMULUS_RETURN_IF_ERROR(r.read_u8(&verdict, "reply verdict"));
  if (verdict > 1) return Status::corrupt(fmt::format("reply: verdict {} is not 0 or 1", verdict));
  reply.accept = verdict == 1;
  ROMULUS_RETURN_IF_ERROR(r.read_u64(&reply.last_committed_epoch, "reply last committed epoch"));
  ROMULUS_RETURN_IF_ERROR(r.read_u64(&reply.committed_session_id, "reply committed session id"));
  ROMULUS_RETURN_IF_ERROR(r.read_u16(&reason_length, "reply reason length"));
  if (reason_length > kMaxRefusalReason) {
    return Status::corrupt(
        fmt::format("reply: reason length {} exceeds limit {}", reason_length, kMaxRefusalReason));
  }
  ROMULUS_RETURN_IF_ERROR(r.read_bytes(reason_length, &reason, "reply reason"));
  ROMULUS_RETURN_IF_ERROR(trailing_check(r, "reply"));
  reply.reason.assign(reinterpret_cast<const char*>(reason.data()), reason.size());
  return Parsed<Reply>(
      std::make_pair(std::move(reply), kHandshakeHeaderSize + header->body_length));
}

Status check_hello_compatible(const Hello& theirs, const LocalGeometry& ours) {
  if (theirs.version != kProtocolVersion) {
    return Status::refused(fmt::format(
        "protocol version mismatch: primary speaks version {}, backup speaks version {}",
        theirs.version, kProtocolVersion));
  }
  if (theirs.page_size != ours.page_size) {
    return Status::refused(fmt::format("page size mismatch: primary uses {} bytes, backup uses {}",
                                       theirs.page_size, ours.page_size));
  }
  if (theirs.word_size != ours.word_size) {
    return Status::refused(
        fmt::format("word size mismatch: primary uses {}-byte words, backup uses {}-byte words",
                    theirs.word_size, ours.word_size));
  }
  if (theirs.guest_page_count != ours.guest_page_count) {
    // Sizes in bytes may overflow only for absurd page counts; saturate.
    const auto bytes = [&](uint64_t pages) {
      return pages > (~0ull / ours.page_size) ? ~0ull : pages * ours.page_size;
    };
    return Status::refused(
        fmt::format("arena size mismatch: primary has {} pages ({}), backup expects {} pages ({})",
                    theirs.guest_page_count, format_arena_size(bytes(theirs.guest_page_count)),
                    ours.guest_page_count, format_arena_size(bytes(ours.guest_page_count))));
  }
  for (CodecId c : theirs.codecs) {
    if (!codec_from_wire(static_cast<uint8_t>(c)) ||
        std::find(ours.codecs.begin(), ours.codecs.end(), c) == ours.codecs.end()) {
      return Status::refused(
          fmt::format("unknown codec: primary may use codec {} ({}), which "
                      "this backup does not support",
                      static_cast<unsigned>(c), codec_name(c)));
    }
  }
  if (theirs.flags != 0) {
    return Status::refused(
        fmt::format("unknown hello flags 0x{:x}: this backup supports none", theirs.flags));
  }
  return Status::ok();
}

}  // namespace romulus::protocol
