// Enum names: one table per enum, beside its definition, read both ways.
//
//   enum class CommitMode : uint8_t { kInterval, kEager };
//   inline constexpr EnumName<CommitMode> kCommitModeNames[] = {
//       {CommitMode::kInterval, "interval"}, {CommitMode::kEager, "eager"}};
//   enum_name(kCommitModeNames, m)              // "eager"
//   enum_list(kCommitModeNames)                 // "interval|eager" (help texts)
//   parse_enum(kCommitModeNames, "Eager")      // CommitMode::kEager
//   parse_enum(kCommitModeNames, "sometimes")  // kInvalidArgument: "'sometimes': use interval or eager"
//
// Names compare without regard to case. The error is one line naming every
// accepted value; the caller prefixes what was being parsed ("--commit ").
// Pure functions; any thread.
#pragma once

#include <cctype>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"

namespace romulus {

template <typename E>
struct EnumName {
  E value;
  std::string_view name;
};

// The name of `value`, "?" if the table lacks it.
template <typename E>
constexpr std::string_view enum_name(std::span<const EnumName<E>> table, E value) {
  for (const auto& e : table)
    if (e.value == value) return e.name;
  return "?";
}

// "a, b or c": the accepted names, for help texts and errors.
template <typename E>
std::string enum_choices(std::span<const EnumName<E>> table) {
  std::string out;
  for (size_t i = 0; i < table.size(); ++i) {
    if (i != 0) out += i + 1 == table.size() ? " or " : ", ";
    out += table[i].name;
  }
  return out;
}

// "a|b|c": the accepted names, as a help text lists an option's values.
template <typename E>
std::string enum_list(std::span<const EnumName<E>> table) {
  std::string out;
  for (const auto& e : table) {
    if (!out.empty()) out += '|';
    out += e.name;
  }
  return out;
}

template <typename E>
Result<E> parse_enum(std::span<const EnumName<E>> table, std::string_view text) {
  for (const auto& e : table) {
    if (e.name.size() != text.size()) continue;
    bool same = true;
    for (size_t i = 0; i < text.size() && same; ++i)
      same = std::tolower(static_cast<unsigned char>(text[i])) ==
             std::tolower(static_cast<unsigned char>(e.name[i]));
    if (same) return e.value;
  }
  std::string message = "'";
  message.append(text);
  message += "': use " + enum_choices(table);
  return Status::invalid_argument(std::move(message));
}

// The array forms, so that call sites name the table only.
template <typename E, size_t N>
constexpr std::string_view enum_name(const EnumName<E> (&table)[N], E value) {
  return enum_name(std::span<const EnumName<E>>(table), value);
}
template <typename E, size_t N>
std::string enum_choices(const EnumName<E> (&table)[N]) {
  return enum_choices(std::span<const EnumName<E>>(table));
}
template <typename E, size_t N>
std::string enum_list(const EnumName<E> (&table)[N]) {
  return enum_list(std::span<const EnumName<E>>(table));
}
template <typename E, size_t N>
Result<E> parse_enum(const EnumName<E> (&table)[N], std::string_view text) {
  return parse_enum(std::span<const EnumName<E>>(table), text);
}

}  // namespace romulus
