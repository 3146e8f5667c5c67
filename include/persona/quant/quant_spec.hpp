// QuantSpec: how a weight matrix is quantized (bits, group size, symmetric or with a minimum, scale
// type, code book), and the traits of the packed 64-byte code tiles that QuantizedMatrix stores.
// docs/formats.md documents every byte.
#pragma once

#include "persona/core/dtype.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace persona {

enum class QuantCodebook : std::uint8_t {
  linear,  // value = scale * code + minimum   (symmetric: minimum = -2^(bits-1) * scale)
  nf4,     // value = scale * kNf4Codebook[code]  (QLoRA 4-bit NormalFloat; 4 bits, symmetric)
};

struct QuantSpec {
  int bits = 4;  // 8, 4 or 2
  // 32, 64 or 128 consecutive input columns share a scale; 8 and 16 exist for matrices with short rows
  // (LoRA B, whose rows are rank long). 2-bit codes need at least 16.
  std::size_t group_size = 32;
  bool symmetric = true;          // scale only; false: scale + minimum per group
  DType scale_type = DType::f16;  // f16, bf16 or f32
  QuantCodebook codebook = QuantCodebook::linear;

  // The QLoRA format: NF4 codes, absmax scale per group of 64 (bitsandbytes' default block size).
  static QuantSpec nf4(std::size_t group_size = 64) { return {4, group_size, true, DType::f16, QuantCodebook::nf4}; }

  // Throws Error(invalid_argument) naming the field, the value and the allowed values.
  void validate() const;
  // Storage per weight, scales and minima included (padding rows of the last panel excluded).
  double bits_per_weight() const;
  std::string to_string() const;  // e.g. "int4 g32 sym f16", "nf4 g64 f16"

  friend bool operator==(const QuantSpec&, const QuantSpec&) = default;
};

// The 16 NF4 values from the QLoRA paper (Dettmers et al. 2023, appendix E), as bitsandbytes ships them.
inline constexpr std::array<float, 16> kNf4Codebook = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

// Codes are packed in 64-byte tiles, each holding kPanelRows consecutive output rows times
// tile_traits(bits).columns_per_tile consecutive input columns: the unit one SIMD load brings in (docs/formats.md).
inline constexpr std::size_t kPanelRows = 16;
inline constexpr std::size_t kTileBytes = 64;

struct alignas(kTileBytes) QuantTile {
  // bytes[4 * row + j], bit field s (bits wide) holds column 4 * s + j of the tile for that row.
  std::array<std::uint8_t, kTileBytes> bytes;
};
static_assert(sizeof(QuantTile) == kTileBytes && alignof(QuantTile) == kTileBytes);

struct QuantTileTraits {
  int bits;
  std::size_t columns_per_tile;   // per row
  std::size_t elements_per_tile;  // kPanelRows * columns_per_tile
  std::size_t bytes_per_tile;     // always kTileBytes
  std::size_t fields_per_byte;    // 8 / bits
};

constexpr QuantTileTraits tile_traits(int bits) noexcept {
  const std::size_t fields = 8 / static_cast<std::size_t>(bits);
  return {bits, 4 * fields, kPanelRows * 4 * fields, kTileBytes, fields};
}
static_assert(tile_traits(4).elements_per_tile * 4 == kTileBytes * 8);
static_assert(tile_traits(2).elements_per_tile * 2 == kTileBytes * 8);
static_assert(tile_traits(8).elements_per_tile * 8 == kTileBytes * 8);

}  // namespace persona
