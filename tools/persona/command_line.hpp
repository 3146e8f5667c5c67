// The persona program's flag parsing: "--name value" and "--switch" flags after a command's positional
// arguments. A bad command line is a UsageError: the program prints it with the command's usage and
// exits 2.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace persona::cli {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class CommandLine {
 public:
  // `valued`: flags that take a value; `switches`: flags that do not. "--help" is always a switch.
  CommandLine(int argc, char** argv, int first, const std::set<std::string, std::less<>>& valued,
              const std::set<std::string, std::less<>>& switches);

  bool help() const noexcept { return has("--help"); }
  bool has(std::string_view flag) const;
  const std::vector<std::string>& positional() const noexcept { return positional_; }
  std::optional<std::string> value(std::string_view flag) const;
  std::string required(std::string_view flag) const;
  // A whole number in [min, max]; UsageError naming the flag otherwise.
  std::optional<std::uint64_t> number(std::string_view flag, std::uint64_t min, std::uint64_t max) const;

 private:
  std::map<std::string, std::string, std::less<>> values_;
  std::set<std::string, std::less<>> switches_;
  std::vector<std::string> positional_;
};

// "1,2,3" as numbers in [min, max]; UsageError naming `what` otherwise.
std::vector<std::uint64_t> parse_number_list(std::string_view text, std::string_view what, std::uint64_t min,
                                             std::uint64_t max);
std::uint64_t parse_number(std::string_view text, std::string_view what, std::uint64_t min, std::uint64_t max);

}  // namespace persona::cli
