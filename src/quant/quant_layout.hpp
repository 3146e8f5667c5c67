// Where each code, scale and minimum of a QuantizedMatrix lives (docs/formats.md), shared by the
// matrix accessors, the quantizer and the scalar reference kernels.
#pragma once

#include "persona/core/dtype.hpp"
#include "persona/quant/quant_spec.hpp"

#include <array>
#include <cstddef>  // offsetof
#include <cstdint>
#include <cstring>

namespace persona::detail {

struct CodePosition {
  std::size_t byte;
  unsigned shift;
};

constexpr CodePosition code_position(std::size_t tiles_per_panel, int bits, std::size_t row, std::size_t col) noexcept {
  const std::size_t per_tile = tile_traits(bits).columns_per_tile;
  const std::size_t in_tile = col % per_tile;
  const std::size_t tile = (row / kPanelRows) * tiles_per_panel + col / per_tile;
  const std::size_t byte = tile * sizeof(QuantTile) + offsetof(QuantTile, bytes) + (row % kPanelRows) * 4 + in_tile % 4;
  return {byte, static_cast<unsigned>((in_tile / 4) * static_cast<std::size_t>(bits))};
}

inline std::uint8_t read_code(const std::uint8_t* codes, std::size_t tiles_per_panel, int bits, std::size_t row,
                              std::size_t col) noexcept {
  const CodePosition p = code_position(tiles_per_panel, bits, row, col);
  const unsigned mask = (1u << bits) - 1u;
  return static_cast<std::uint8_t>((codes[p.byte] >> p.shift) & mask);
}

inline void write_code(std::uint8_t* codes, std::size_t tiles_per_panel, int bits, std::size_t row, std::size_t col,
                       std::uint8_t code) noexcept {
  const CodePosition p = code_position(tiles_per_panel, bits, row, col);
  const unsigned mask = ((1u << bits) - 1u) << p.shift;
  codes[p.byte] =
      static_cast<std::uint8_t>((codes[p.byte] & ~mask) | ((static_cast<unsigned>(code) << p.shift) & mask));
}

// Scales and minima: [panels, groups, kPanelRows].
constexpr std::size_t param_index(std::size_t groups, std::size_t row, std::size_t group) noexcept {
  return ((row / kPanelRows) * groups + group) * kPanelRows + row % kPanelRows;
}

inline float read_param(const std::uint8_t* plane, DType type, std::size_t index) noexcept {
  std::uint16_t half = 0;
  float value = 0.0f;
  switch (type) {
    case DType::f16: std::memcpy(&half, plane + 2 * index, 2); return f16_bits_to_f32(half);
    case DType::bf16: std::memcpy(&half, plane + 2 * index, 2); return bf16_bits_to_f32(half);
    default: std::memcpy(&value, plane + 4 * index, 4); return value;
  }
}

// The value as stored in `type` (rounded to nearest even), read back as f32.
inline float round_to_param_type(float value, DType type) noexcept {
  switch (type) {
    case DType::f16: return f16_bits_to_f32(f32_to_f16_bits(value));
    case DType::bf16: return bf16_bits_to_f32(f32_to_bf16_bits(value));
    default: return value;
  }
}

inline void write_param(std::uint8_t* plane, DType type, std::size_t index, float value) noexcept {
  std::uint16_t half = 0;
  switch (type) {
    case DType::f16:
      half = f32_to_f16_bits(value);
      std::memcpy(plane + 2 * index, &half, 2);
      return;
    case DType::bf16:
      half = f32_to_bf16_bits(value);
      std::memcpy(plane + 2 * index, &half, 2);
      return;
    default: std::memcpy(plane + 4 * index, &value, 4); return;
  }
}

// Symmetric linear codes store q + 2^(bits-1): the effective minimum is -2^(bits-1) * scale (exact).
constexpr float symmetric_offset(int bits) noexcept { return static_cast<float>(1 << (bits - 1)); }

// NF4 codes as the unsigned int8 values the integer path multiplies: round(127 * nf4) + 127, in [0, 254].
constexpr std::array<std::uint8_t, 16> make_nf4_int8_codes() {
  std::array<std::uint8_t, 16> out{};
  for (std::size_t i = 0; i < 16; ++i) {
    const float r = 127.0f * kNf4Codebook[i];
    const int rounded = static_cast<int>(r + (r >= 0.0f ? 0.5f : -0.5f));
    out[i] = static_cast<std::uint8_t>(rounded + 127);
  }
  return out;
}
inline constexpr std::array<std::uint8_t, 16> kNf4Int8Codes = make_nf4_int8_codes();
inline constexpr float kNf4Int8Offset = 127.0f;
inline constexpr float kInv127 = 1.0f / 127.0f;

}  // namespace persona::detail
