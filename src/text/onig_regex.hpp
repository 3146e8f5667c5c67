// A compiled Oniguruma regex (Debian's libonig-dev): the engine Hugging Face tokenizers itself runs its
// pre-tokenizer patterns on (Unicode classes, lookahead), with the same syntax and the same iteration
// over matches, so that persona splits where it does. Searches are bounded (retry limit), safe from
// several threads at once. Internal to the library.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace persona::text {

class OnigRegex {
 public:
  // Error(invalid_argument) naming `what` with Oniguruma's message for a pattern it refuses.
  OnigRegex(std::string_view pattern, std::string_view what);
  ~OnigRegex();
  OnigRegex(const OnigRegex&) = delete;
  OnigRegex& operator=(const OnigRegex&) = delete;

  // The [begin, end) byte ranges of the matches in s, left to right, as the onig crate's find_iter: an
  // empty match right after the previous match is skipped.
  void find_all(std::string_view s, std::vector<std::pair<std::size_t, std::size_t>>& out) const;
  // Every match in s replaced by `content`.
  void replace_all(std::string& s, std::string_view content) const;

  // A pattern matching `literal` exactly.
  static std::string escape(std::string_view literal);

 private:
  void* regex_ = nullptr;  // OnigRegex (regex_t*)
  std::string what_;
};

}  // namespace persona::text
