#include "protocol/backup_messages.h"

#include <fmt/format.h>

#include <algorithm>

#include "protocol/wire_format.h"

namespace romulus::protocol {
namespace {

constexpr size_t kErrorHeader = 4 + 4 + 2;  // type, code, length
constexpr size_t kMaxMessage = kErrorHeader + kMaxRefusalReason;

bool valid_error_code(uint32_t code) {
  return code > static_cast<uint32_t>(StatusCode::kOk) &&
         code <= static_cast<uint32_t>(StatusCode::kAborted);
}

}  // namespace

Bytes encode_ack(uint64_t epoch) {
  Bytes out;
  put_i32(out, kChunkAck);
  put_u64(out, epoch);
  return out;
}

Bytes encode_backup_heartbeat(uint64_t ns) {
  Bytes out;
  put_i32(out, kChunkHeartbeat);
  put_u64(out, ns);
  return out;
}

Bytes encode_error(const Status& error) {
  const StatusCode code = error.is_ok() ? StatusCode::kAborted : error.code();
  std::string_view text = error.message();
  if (text.size() > kMaxRefusalReason) {
    size_t n = kMaxRefusalReason;
    while (n > 0 && (static_cast<uint8_t>(text[n]) & 0xC0) == 0x80) --n;
    text = text.substr(0, n);
  }
  Bytes out;
  put_i32(out, kChunkError);
  put_u32(out, static_cast<uint32_t>(code));
  put_u16(out, static_cast<uint16_t>(text.size()));
  put_bytes(out, ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  return out;
}

Result<size_t> BackupMessageReader::parse_one(ByteSpan in, std::vector<BackupMessage>* out) {
  if (in.size() < 4) return size_t{0};
  const int32_t type = static_cast<int32_t>(load_u32(in.data()));
  switch (type) {
    case kChunkAck:
    case kChunkHeartbeat: {
      if (in.size() < 12) return size_t{0};
      BackupMessage m;
      m.kind = type == kChunkAck ? BackupMessage::Kind::kAck : BackupMessage::Kind::kHeartbeat;
      m.value = load_u64(in.data() + 4);
      out->push_back(std::move(m));
      return size_t{12};
    }
    case kChunkError: {
      if (in.size() < 8) return size_t{0};
      const uint32_t code = load_u32(in.data() + 4);
      if (!valid_error_code(code)) {
        return Status::corrupt(fmt::format("backup ERROR message: unknown status code {}", code));
      }
      if (in.size() < kErrorHeader) return size_t{0};
      const uint16_t length = load_u16(in.data() + 8);
      if (length > kMaxRefusalReason) {
        return Status::corrupt(fmt::format("backup ERROR message: text length {} exceeds limit {}",
                                           length, kMaxRefusalReason));
      }
      if (in.size() < kErrorHeader + length) return size_t{0};
      BackupMessage m;
      m.kind = BackupMessage::Kind::kError;
      m.error =
          Status(static_cast<StatusCode>(code),
                 std::string(reinterpret_cast<const char*>(in.data() + kErrorHeader), length));
      out->push_back(std::move(m));
      return kErrorHeader + length;
    }
    default:
      return Status::corrupt(fmt::format("backup message: unknown type {}", type));
  }
}

Status BackupMessageReader::feed(ByteSpan data, std::vector<BackupMessage>* out) {
  if (!error_.is_ok()) return error_;
  const auto fail = [&](Status s) {
    error_ = std::move(s);
    pending_.clear();
    return error_;
  };
  // Complete a held partial message a few bytes at a time: it is short, and
  // this never copies more than one message's worth of `data`.
  while (!pending_.empty() && !data.empty()) {
    const size_t take = std::min(data.size(), kMaxMessage - pending_.size());
    const size_t before = pending_.size();
    pending_.insert(pending_.end(), data.begin(), data.begin() + static_cast<ptrdiff_t>(take));
    Result<size_t> used = parse_one(pending_, out);
    if (!used.is_ok()) return fail(used.status());
    if (*used == 0) {
      if (pending_.size() >= kMaxMessage) return fail(Status::corrupt("backup message too long"));
      bytes_consumed_ += take;
      data = data.subspan(take);
      continue;
    }
    // The message ended inside what was just appended.
    const size_t from_data = *used - before;
    bytes_consumed_ += from_data;
    data = data.subspan(from_data);
    pending_.clear();
  }
  while (!data.empty()) {
    Result<size_t> used = parse_one(data, out);
    if (!used.is_ok()) return fail(used.status());
    if (*used == 0) {
      pending_.assign(data.begin(), data.end());
      bytes_consumed_ += data.size();
      break;
    }
    bytes_consumed_ += *used;
    data = data.subspan(*used);
  }
  return Status::ok();
}

}  // namespace romulus::protocol
