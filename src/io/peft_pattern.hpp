// PEFT's rank_pattern / alpha_pattern keys: regular expressions that PEFT matches against a module's name
// as re.match(rf"(.*\.)?({key})$", name), the first matching key in file order winning (get_pattern_key).
// Matched with PCRE2 (Debian's libpcre2-dev; Python's re and PCRE agree on the syntax PEFT's keys use),
// under match and depth limits, so that a hostile key in a file costs bounded time.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace persona::detail {

class PeftPatterns {
 public:
  PeftPatterns();
  ~PeftPatterns();
  PeftPatterns(PeftPatterns&&) noexcept;
  PeftPatterns& operator=(PeftPatterns&&) noexcept;

  // Compiles `key` (Error(corrupt_data) naming `field` and the key when it is not a valid pattern or
  // longer than 1024 characters) and appends it with its value.
  void add(std::string key, double value, std::string_view field);
  // The value of the first key that matches `name`; Error(corrupt_data) when matching hits PCRE2's
  // limits.
  std::optional<double> find(std::string_view name) const;
  bool empty() const noexcept;

 private:
  struct Pattern;
  std::vector<std::unique_ptr<Pattern>> patterns_;
};

}  // namespace persona::detail
