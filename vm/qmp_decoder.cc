#include "vm/qmp_decoder.h"

#include <fmt/format.h>

namespace romulus::vm {

namespace json = boost::json;

std::string one_line(std::string_view text, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(text.size(), max_bytes + 3));
  for (char c : text) {
    if (out.size() >= max_bytes) {
      out += "...";
      break;
    }
    unsigned char u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? ' ' : c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

Status QmpDecoder::feed(std::string_view data) {
  if (!error_.is_ok()) return error_;
  while (!data.empty()) {
    size_t nl = data.find('\n');
    std::string_view piece = data.substr(0, nl);
    if (line_.size() + piece.size() > max_line_bytes_) {
      error_ = Status::corrupt(
          fmt::format("QMP line {} is longer than {} bytes", lines_ + 1, max_line_bytes_));
      line_.clear();
      line_.shrink_to_fit();
      return error_;
    }
    line_.append(piece);
    if (nl == std::string_view::npos) break;
    data.remove_prefix(nl + 1);
    ++lines_;
    std::string_view line = line_;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    Status s = decode_line(line);
    line_.clear();
    if (!s.is_ok()) {
      error_ = s;
      line_.shrink_to_fit();
      return error_;
    }
  }
  return Status::ok();
}

std::optional<QmpMessage> QmpDecoder::next() {
  if (messages_.empty()) return std::nullopt;
  QmpMessage m = std::move(messages_.front());
  messages_.pop_front();
  return m;
}

Status QmpDecoder::decode_line(std::string_view line) {
  if (line.find_first_not_of(" \t\r") == std::string_view::npos) return Status::ok();
  auto bad = [&](std::string_view what) {
    return Status::corrupt(fmt::format("QMP line {}: {}", lines_, what));
  };
  boost::system::error_code ec;
  json::value v = json::parse(line, ec);
  if (ec) return bad(fmt::format("not JSON ({})", ec.message()));
  json::object* o = v.if_object();
  if (o == nullptr) return bad("not a JSON object");

  QmpMessage m;
  if (const json::value* id = o->if_contains("id")) {
    if (id->is_uint64()) {
      m.id = id->get_uint64();
    } else if (id->is_int64() && id->get_int64() >= 0) {
      m.id = static_cast<uint64_t>(id->get_int64());
    } else {
      return bad("\"id\" is not a non-negative integer");
    }
  }
  int kinds = static_cast<int>(o->contains("QMP")) + static_cast<int>(o->contains("return")) +
              static_cast<int>(o->contains("error")) + static_cast<int>(o->contains("event"));
  if (kinds != 1) {
    return bad("not exactly one of \"QMP\", \"return\", \"error\", \"event\"");
  }
  if (json::value* greeting = o->if_contains("QMP")) {
    if (!greeting->is_object()) return bad("greeting \"QMP\" is not an object");
    m.kind = QmpMessageKind::kGreeting;
    m.value = std::move(*greeting);
  } else if (json::value* ret = o->if_contains("return")) {
    m.kind = QmpMessageKind::kReturn;
    m.value = std::move(*ret);
  } else if (json::value* error = o->if_contains("error")) {
    json::object* e = error->if_object();
    if (e == nullptr) return bad("\"error\" is not an object");
    const json::value* desc = e->if_contains("desc");
    if (desc == nullptr || !desc->is_string()) return bad("\"error\" has no string \"desc\"");
    m.kind = QmpMessageKind::kError;
    m.error_desc = one_line(desc->get_string());
    if (const json::value* cls = e->if_contains("class"); cls != nullptr && cls->is_string()) {
      m.error_class = one_line(cls->get_string(), 64);
    }
    m.value = std::move(*error);
  } else {
    json::value& event = o->at("event");
    if (!event.is_string() || event.get_string().empty()) {
      return bad("\"event\" is not a non-empty string");
    }
    m.kind = QmpMessageKind::kEvent;
    m.event = one_line(event.get_string(), 128);
    if (json::value* data = o->if_contains("data")) m.value = std::move(*data);
  }
  messages_.push_back(std::move(m));
  return Status::ok();
}

}  // namespace romulus::vm
