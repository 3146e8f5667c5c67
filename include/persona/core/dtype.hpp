// Element types persona stores and moves (DType), their sizes and names, and the 16-bit float
// conversions: scalar helpers here, vectorized bulk conversions in convert_* (dispatched by CPU level).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace persona {

enum class DType : std::uint8_t { f32, f16, bf16, i8, i32, u8 };

constexpr std::size_t size_of(DType t) noexcept {
  switch (t) {
    case DType::f32: return 4;
    case DType::f16: return 2;
    case DType::bf16: return 2;
    case DType::i8: return 1;
    case DType::i32: return 4;
    case DType::u8: return 1;
  }
  return 0;
}

constexpr std::string_view name_of(DType t) noexcept {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::i8: return "i8";
    case DType::i32: return "i32";
    case DType::u8: return "u8";
  }
  return "unknown";
}

// Parses "f32", "f16", ... ; throws Error(invalid_argument) listing the accepted names.
DType parse_dtype(std::string_view name);

// IEEE binary16 and bfloat16 as raw bits. Distinct types so overloads and Tensor<T> can tell them apart.
struct f16 {
  std::uint16_t bits;
};
struct bf16 {
  std::uint16_t bits;
};

template <class T>
struct dtype_of;
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::f32;
};
template <>
struct dtype_of<f16> {
  static constexpr DType value = DType::f16;
};
template <>
struct dtype_of<bf16> {
  static constexpr DType value = DType::bf16;
};
template <>
struct dtype_of<std::int8_t> {
  static constexpr DType value = DType::i8;
};
template <>
struct dtype_of<std::int32_t> {
  static constexpr DType value = DType::i32;
};
template <>
struct dtype_of<std::uint8_t> {
  static constexpr DType value = DType::u8;
};
template <class T>
inline constexpr DType dtype_of_v = dtype_of<T>::value;

// Scalar conversions; the reference for the vectorized ones. Round to nearest even; Inf is kept; a NaN
// stays NaN (made quiet, upper payload bits kept), as the F16C and AVX-512 instructions do.
constexpr float f16_bits_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu;
  std::uint32_t mantissa = h & 0x3ffu;
  std::uint32_t bits = 0;
  if (exponent == 0x1f) {  // Inf or NaN
    bits = sign | 0x7f800000u | (mantissa << 13) | (mantissa ? 0x00400000u : 0u);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal half: normalize
    std::uint32_t e = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mantissa & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

constexpr std::uint16_t f32_to_f16_bits(float value) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(value);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) {  // NaN: quiet it, keep the top payload bits
    return static_cast<std::uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  }
  if (abs >= 0x477ff000u) {  // rounds to >= 65520: overflows to Inf
    return static_cast<std::uint16_t>(sign | 0x7c00u);
  }
  if (abs < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    if (abs < 0x33000000u) return static_cast<std::uint16_t>(sign);  // < 2^-25 rounds to zero
    const std::uint32_t exponent = abs >> 23;
    const std::uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126 - exponent;  // 14..24
    const std::uint32_t half_mantissa = mantissa >> shift;
    const std::uint32_t remainder = mantissa & ((1u << shift) - 1);
    const std::uint32_t halfway = 1u << (shift - 1);
    const std::uint32_t round_up = (remainder > halfway || (remainder == halfway && (half_mantissa & 1u))) ? 1u : 0u;
    return static_cast<std::uint16_t>(sign | (half_mantissa + round_up));
  }
  // Normal: rebias the exponent and round the mantissa to 10 bits (a carry may bump the exponent).
  const std::uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return static_cast<std::uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

constexpr float bf16_bits_to_f32(std::uint16_t b) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

constexpr std::uint16_t f32_to_bf16_bits(float value) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(value);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);
  return static_cast<std::uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

constexpr float to_f32(f16 h) noexcept { return f16_bits_to_f32(h.bits); }
constexpr float to_f32(bf16 b) noexcept { return bf16_bits_to_f32(b.bits); }
constexpr f16 to_f16(float x) noexcept { return f16{f32_to_f16_bits(x)}; }
constexpr bf16 to_bf16(float x) noexcept { return bf16{f32_to_bf16_bits(x)}; }

// Bulk conversions at the active SIMD level; results are bit-identical to the scalar ones above.
// Shapes: `in` and `out` have the same length (Error shape_mismatch otherwise).
void convert(std::span<const float> in, std::span<f16> out);
void convert(std::span<const f16> in, std::span<float> out);
void convert(std::span<const float> in, std::span<bf16> out);
void convert(std::span<const bf16> in, std::span<float> out);

}  // namespace persona
