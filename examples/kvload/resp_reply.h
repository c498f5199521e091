// RESP replies for romulus-kvload --protocol resp: one reply of the Redis
// serialization protocol (RESP2) parsed from the bytes a server sent, and the
// requests kvload writes.
//
// Grammar of a reply (only what SET, GET, INCR, DEL and WAIT can answer):
//
//   reply   = simple / error / integer / bulk / null
//   simple  = "+" text CRLF                 e.g. "+OK\r\n"
//   error   = "-" text CRLF                 e.g. "-NOREPLICAS ...\r\n"
//   integer = ":" ["-"] digits CRLF         e.g. ":1\r\n" (WAIT: replicas that acked)
//   bulk    = "$" digits CRLF bytes CRLF    e.g. "$3\r\nabc\r\n"
//   null    = "$-1" CRLF
//
// `text` holds no CR or LF. Arrays ("*") and every other type byte are a
// protocol error: no request kvload sends is answered with one.
//
// The input is hostile: a reply (header, body and both CRLFs) longer than
// max_bytes is an error as soon as that is known, before anything is
// allocated; a length is parsed with overflow checks; the bytes after a bulk
// body must be CRLF. Any split of the input into reads gives the same result
// (kNeedMore until the reply is complete). Pure functions; thread-compatible.
#pragma once

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace romulus::kvload {

enum class RespType { kSimple, kError, kInteger, kBulk, kNull };

struct RespReply {
  RespType type = RespType::kNull;
  std::string_view text;  // simple, error: the text; bulk: the body (views the input)
  int64_t integer = 0;    // integer only
};

struct RespParse {
  enum class Outcome { kNeedMore, kReply, kBad };
  Outcome outcome = Outcome::kNeedMore;
  RespReply reply;         // kReply
  size_t consumed = 0;     // kReply: bytes of the input the reply took
  std::string_view error;  // kBad: what was wrong, for one log line
};

namespace resp_detail {

inline RespParse bad(std::string_view why) {
  RespParse p;
  p.outcome = RespParse::Outcome::kBad;
  p.error = why;
  return p;
}

inline bool parse_integer(std::string_view text, int64_t& out) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size() && text[0] != '+';
}

}  // namespace resp_detail

// Parses the first reply in `in`. kNeedMore: `in` is a prefix of a valid
// reply no longer than max_bytes; read more and call again with all of it.
inline RespParse parse_resp_reply(std::string_view in, size_t max_bytes) {
  using resp_detail::bad;
  if (in.empty()) return {};
  size_t lf = in.find('\n');
  if (lf == std::string_view::npos) {
    if (in.size() >= max_bytes) return bad("a reply line longer than the reply limit");
    return {};
  }
  if (lf + 1 > max_bytes) return bad("a reply line longer than the reply limit");
  if (lf == 0 || in[lf - 1] != '\r') return bad("a reply line not ended by CRLF");
  std::string_view line = in.substr(1, lf - 2);  // without the type byte and CRLF
  if (line.find('\r') != std::string_view::npos) return bad("a CR inside a reply line");
  RespParse p;
  p.outcome = RespParse::Outcome::kReply;
  p.consumed = lf + 1;
  switch (in[0]) {
    case '+':
      p.reply = {RespType::kSimple, line, 0};
      return p;
    case '-':
      p.reply = {RespType::kError, line, 0};
      return p;
    case ':':
      if (!resp_detail::parse_integer(line, p.reply.integer)) return bad("a malformed integer");
      p.reply.type = RespType::kInteger;
      return p;
    case '$': {
      int64_t length = 0;
      if (!resp_detail::parse_integer(line, length)) return bad("a malformed bulk length");
      if (length == -1) {
        p.reply.type = RespType::kNull;
        return p;
      }
      if (length < 0) return bad("a negative bulk length");
      size_t header = lf + 1;
      if (static_cast<uint64_t>(length) > max_bytes ||
          header + static_cast<size_t>(length) + 2 > max_bytes) {
        return bad("a bulk string longer than the reply limit");
      }
      size_t total = header + static_cast<size_t>(length) + 2;
      if (in.size() < total) return {};
      if (in[total - 2] != '\r' || in[total - 1] != '\n')
        return bad("a bulk string not ended by CRLF");
      p.reply = {RespType::kBulk, in.substr(header, static_cast<size_t>(length)), 0};
      p.consumed = total;
      return p;
    }
    default:
      return bad("an unexpected reply type byte (arrays and RESP3 types are not expected)");
  }
}

// Appends one request as a RESP array of bulk strings, e.g. SET k v:
// "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n".
inline void append_resp_command(std::string& out, std::initializer_list<std::string_view> args) {
  out += '*';
  out += std::to_string(args.size());
  out += "\r\n";
  for (std::string_view a : args) {
    out += '$';
    out += std::to_string(a.size());
    out += "\r\n";
    out += a;
    out += "\r\n";
  }
}

}  // namespace romulus::kvload
