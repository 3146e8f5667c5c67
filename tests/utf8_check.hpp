// Whether bytes are well-formed UTF-8 (lead and continuation bytes only; enough for the tokenizer tests'
// promise that no output holds part of a character). Shared by tests/text_test.cpp and tests/fuzz/fuzz_text.cpp.
#pragma once

#include <cstddef>
#include <string_view>

namespace persona::test {

inline bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const std::size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (std::size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

}  // namespace persona::test
