#include "text/byte_level.hpp"

#include "text/unicode.hpp"

#include <array>

namespace persona::text {
namespace {

struct Alphabet {
  std::array<char32_t, 256> of_byte{};
  std::array<std::string, 256> utf8{};
  Alphabet() {
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      of_byte[static_cast<std::size_t>(b)] =
          printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++);
      append_utf8(utf8[static_cast<std::size_t>(b)], of_byte[static_cast<std::size_t>(b)]);
    }
  }
};

const Alphabet& alphabet() {
  static const Alphabet a;
  return a;
}

}  // namespace

std::string bytes_to_unicode(std::string_view bytes) {
  const Alphabet& a = alphabet();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char b : bytes) out.append(a.utf8[static_cast<unsigned char>(b)]);
  return out;
}

std::optional<std::uint8_t> unicode_to_byte(char32_t c) noexcept {
  if ((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF))
    return static_cast<std::uint8_t>(c);
  if (c < 256 || c >= 256 + 68) return std::nullopt;
  // The non-printable bytes in order: 0x00-0x20, 0x7F-0xA0, 0xAD.
  const std::uint32_t k = c - 256;
  if (k <= 0x20) return static_cast<std::uint8_t>(k);
  if (k <= 0x20 + 34) return static_cast<std::uint8_t>(0x7F + (k - 0x21));
  return static_cast<std::uint8_t>(0xAD);
}

}  // namespace persona::text
