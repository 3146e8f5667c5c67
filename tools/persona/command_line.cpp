#include "command_line.hpp"

#include <fmt/format.h>

#include <charconv>

namespace persona::cli {

CommandLine::CommandLine(int argc, char** argv, int first, const std::set<std::string, std::less<>>& valued,
                         const std::set<std::string, std::less<>>& switches) {
  for (int i = first; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      switches_.insert("--help");
    } else if (valued.contains(arg)) {
      if (i + 1 >= argc) throw UsageError(fmt::format("{} needs a value", arg));
      if (!values_.emplace(arg, argv[++i]).second) throw UsageError(fmt::format("{} is given twice", arg));
    } else if (switches.contains(arg)) {
      switches_.insert(arg);
    } else if (arg.starts_with("-")) {
      throw UsageError(fmt::format("unknown flag {}", arg));
    } else {
      positional_.push_back(arg);
    }
  }
}

bool CommandLine::has(std::string_view flag) const { return switches_.contains(flag) || values_.contains(flag); }

std::optional<std::string> CommandLine::value(std::string_view flag) const {
  const auto it = values_.find(flag);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string CommandLine::required(std::string_view flag) const {
  std::optional<std::string> v = value(flag);
  if (!v) throw UsageError(fmt::format("{} is required", flag));
  return *v;
}

std::optional<std::uint64_t> CommandLine::number(std::string_view flag, std::uint64_t min, std::uint64_t max) const {
  const std::optional<std::string> v = value(flag);
  if (!v) return std::nullopt;
  return parse_number(*v, flag, min, max);
}

std::uint64_t parse_number(std::string_view text, std::string_view what, std::uint64_t min, std::uint64_t max) {
  std::uint64_t n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || n < min || n > max) {
    throw UsageError(fmt::format("{} takes a whole number from {} to {}, not '{}'", what, min, max, text));
  }
  return n;
}

std::vector<std::uint64_t> parse_number_list(std::string_view text, std::string_view what, std::uint64_t min,
                                             std::uint64_t max) {
  std::vector<std::uint64_t> numbers;
  if (text.empty()) throw UsageError(fmt::format("{} takes a comma-separated list of numbers", what));
  for (std::size_t begin = 0;;) {
    const std::size_t comma = text.find(',', begin);
    numbers.push_back(parse_number(text.substr(begin, comma - begin), what, min, max));
    if (comma == std::string_view::npos) break;
    begin = comma + 1;
  }
  return numbers;
}

}  // namespace persona::cli
