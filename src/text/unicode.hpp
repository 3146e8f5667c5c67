// UTF-8 and Unicode properties for the tokenizers, on utf8proc (categories, case, normalization forms):
// the character classes Hugging Face tokenizers takes from Rust's char (is_whitespace, is_punctuation,
// to_lowercase, ...), so that persona splits and normalizes where it does. Internal to the library.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace persona::text {

// The input with every ill-formed UTF-8 sequence replaced by U+FFFD, one per maximal subpart (as
// Python's errors="replace" and Rust's from_utf8_lossy do).
std::string valid_utf8(std::string_view bytes);
// The length of a trailing sequence that is a proper prefix of a well-formed character (0..3): bytes
// that a later byte may still complete.
std::size_t incomplete_utf8_tail(std::string_view bytes) noexcept;

// The code point starting at s[i] of valid UTF-8, and i moved past it.
char32_t next_code_point(std::string_view s, std::size_t& i) noexcept;
void append_utf8(std::string& out, char32_t c);
std::size_t utf8_length(char32_t c) noexcept;

bool is_whitespace(char32_t c) noexcept;   // Rust's char::is_whitespace: the White_Space property
bool is_other(char32_t c) noexcept;        // general category C* (Cc, Cf, Cs, Co, Cn)
bool is_punctuation(char32_t c) noexcept;  // general category P*
bool is_ascii_punctuation(char32_t c) noexcept;
bool is_nonspacing_mark(char32_t c) noexcept;  // Mn
bool is_word(char32_t c) noexcept;             // \w: letters, marks, decimal digits, connector punctuation
bool is_numeric_digit(char32_t c) noexcept;    // Rust's char::is_numeric: N*
// Appends the full lowercase of c (Rust's char::to_lowercase: U+0130 becomes two code points).
void append_lowercase(std::string& out, char32_t c);

enum class NormalForm { nfc, nfd, nfkc, nfkd };
std::string normalize(std::string_view s, NormalForm form);

}  // namespace persona::text
