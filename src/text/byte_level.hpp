// GPT-2's byte-level alphabet: each byte stands for a printable code point (the printable Latin-1 bytes
// for themselves, the others for U+0100 onwards), so that any byte string is a string of "characters"
// BPE can merge. Internal to the library.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace persona::text {

// The UTF-8 of the code points that stand for the bytes of `bytes`.
std::string bytes_to_unicode(std::string_view bytes);
// The byte a code point stands for, if it is one of the 256.
std::optional<std::uint8_t> unicode_to_byte(char32_t c) noexcept;

}  // namespace persona::text
