// The bank's request line: a pure parser over bytes, shared by romulus-bank and
// its fuzz target (tests/fuzz/bank_request_fuzz.cc).
//
// Grammar (one request per line, '\n'-terminated, an optional '\r' before it,
// single spaces between fields, commands case-sensitive):
//
//   request  = "TRANSFER" SP account SP account SP amount SP id
//            / "BALANCE" SP account / "CHECK" SP id / "TOTAL" / "AUDIT" / "PING"
//   account  = 1*9DIGIT            ; < the bank's account count (checked by the bank)
//   amount   = 1*9DIGIT            ; 1 .. 999999999
//   id       = 1*64( ALPHA / DIGIT / "-" / "_" / "." / ":" )
//
// The input is hostile: any byte string gives either a Request or an error
// message, never a crash; nothing is read past the view. A line longer than
// kMaxRequestLine is refused by the session before it reaches the parser.
#pragma once

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

namespace romulus::bank {

inline constexpr size_t kMaxRequestLine = 256;
inline constexpr size_t kMaxIdBytes = 64;

enum class Command { kTransfer, kBalance, kCheck, kTotal, kAudit, kPing };

struct Request {
  Command command = Command::kPing;
  uint32_t from = 0;  // TRANSFER; BALANCE's account
  uint32_t to = 0;
  uint32_t amount = 0;
  std::string_view id;  // TRANSFER, CHECK: a view into the parsed line
};

// A request, or the text of an "ERROR ..." reply.
using ParseResult = std::variant<Request, std::string>;

namespace detail {

inline bool next_field(std::string_view& rest, std::string_view& field) {
  if (rest.empty()) return false;
  size_t sp = rest.find(' ');
  field = rest.substr(0, sp);
  rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
  return !field.empty();
}

inline bool parse_number(std::string_view text, uint32_t& out) {
  if (text.empty() || text.size() > 9) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && p == text.data() + text.size();
}

inline bool valid_id(std::string_view id) {
  if (id.empty() || id.size() > kMaxIdBytes) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.' || c == ':';
    if (!ok) return false;
  }
  return true;
}

}  // namespace detail

// Parses one line (without its '\n'; a trailing '\r' is ignored).
inline ParseResult parse_request(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.size() > kMaxRequestLine) return std::string("ERROR line too long");
  std::string_view rest = line, cmd;
  if (!detail::next_field(rest, cmd)) return std::string("ERROR empty request");
  Request r;
  std::string_view a, b, c, d;
  if (cmd == "TRANSFER") {
    r.command = Command::kTransfer;
    if (!detail::next_field(rest, a) || !detail::next_field(rest, b) ||
        !detail::next_field(rest, c) || !detail::next_field(rest, d) || !rest.empty()) {
      return std::string("ERROR usage: TRANSFER <from> <to> <amount> <id>");
    }
    if (!detail::parse_number(a, r.from) || !detail::parse_number(b, r.to)) {
      return std::string("ERROR bad account number");
    }
    if (!detail::parse_number(c, r.amount) || r.amount == 0) {
      return std::string("ERROR bad amount (1 to 999999999)");
    }
    if (!detail::valid_id(d)) return std::string("ERROR bad id (1-64 of A-Z a-z 0-9 - _ . :)");
    if (r.from == r.to) return std::string("ERROR from and to are the same account");
    r.id = d;
    return r;
  }
  if (cmd == "BALANCE") {
    r.command = Command::kBalance;
    if (!detail::next_field(rest, a) || !rest.empty()) {
      return std::string("ERROR usage: BALANCE <account>");
    }
    if (!detail::parse_number(a, r.from)) return std::string("ERROR bad account number");
    return r;
  }
  if (cmd == "CHECK") {
    r.command = Command::kCheck;
    if (!detail::next_field(rest, a) || !rest.empty())
      return std::string("ERROR usage: CHECK <id>");
    if (!detail::valid_id(a)) return std::string("ERROR bad id (1-64 of A-Z a-z 0-9 - _ . :)");
    r.id = a;
    return r;
  }
  const Command simple[] = {Command::kTotal, Command::kAudit, Command::kPing};
  const std::string_view names[] = {"TOTAL", "AUDIT", "PING"};
  for (size_t i = 0; i < 3; ++i) {
    if (cmd == names[i]) {
      if (!rest.empty() || line.size() != cmd.size()) {
        return "ERROR usage: " + std::string(names[i]);
      }
      r.command = simple[i];
      return r;
    }
  }
  return std::string("ERROR unknown command");
}

}  // namespace romulus::bank
