// Reading and writing one token's row of one KV head in a layer's pool, in any storage type: the scalar
// path the cache's writes, read_kv and the reference kernel share.
#pragma once

#include "persona/core/dtype.hpp"
#include "persona/kv/kv_cache_config.hpp"
#include "persona/kv/kv_layer_view.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace persona::detail {

template <class Convert>
void load_16bit_row(const std::byte* row, std::size_t dim, float* out, Convert convert) noexcept {
  for (std::size_t d = 0; d < dim; ++d) {
    std::uint16_t bits;
    std::memcpy(&bits, row + 2 * d, 2);
    out[d] = convert(bits);
  }
}

template <class Convert>
void store_16bit_row(std::byte* row, std::size_t dim, const float* in, Convert convert) noexcept {
  for (std::size_t d = 0; d < dim; ++d) {
    const std::uint16_t bits = convert(in[d]);
    std::memcpy(row + 2 * d, &bits, 2);
  }
}

// Row `index` (KvLayerView::row_index) of a layer's K or V array as f32.
inline void kv_load_row(const KvLayerView& layer, const std::byte* base, const float* scales, std::size_t index,
                        float* out) noexcept {
  const std::byte* row = base + index * layer.head_dim * size_of(layer.storage);
  const std::size_t dim = layer.head_dim;
  switch (layer.storage) {
    case DType::f32: std::memcpy(out, row, dim * sizeof(float)); break;
    case DType::f16: load_16bit_row(row, dim, out, f16_bits_to_f32); break;
    case DType::bf16: load_16bit_row(row, dim, out, bf16_bits_to_f32); break;
    default: {  // i8: code * scale of (slot, head)
      const float scale = scales[index];
      for (std::size_t d = 0; d < dim; ++d) out[d] = static_cast<float>(static_cast<std::int8_t>(row[d])) * scale;
    }
  }
}

// Stores `in` ([head_dim], finite) as row `index`; int8 rows get scale absmax / 127 and codes
// nearbyint(x * 127 / absmax), computed in double.
// Why symmetric per (token, head) and not the codecs of quant or ann: K and V are roughly zero-centred,
// a zero point would cost attention a subtraction per element on the hot path, and one scale per row
// written once keeps appends independent of each other (no group spanning tokens). quant's activation
// quantizer (absmax / 127 per group, with code sums for the weights' minima) is built for the int8
// product and runs per call; ann's codec (min/max, 255 levels) serves vectors stored once and compared
// often, where the extra level and the offset pay for themselves.
inline void kv_store_row(const KvLayerView& layer, std::byte* base, float* scales, std::size_t index,
                         const float* in) noexcept {
  std::byte* row = base + index * layer.head_dim * size_of(layer.storage);
  const std::size_t dim = layer.head_dim;
  switch (layer.storage) {
    case DType::f32: std::memcpy(row, in, dim * sizeof(float)); break;
    case DType::f16: store_16bit_row(row, dim, in, f32_to_f16_bits); break;
    case DType::bf16: store_16bit_row(row, dim, in, f32_to_bf16_bits); break;
    default: {
      float absmax = 0.0f;
      for (std::size_t d = 0; d < dim; ++d) absmax = std::max(absmax, std::fabs(in[d]));
      scales[index] = absmax / 127.0f;
      // In double: 127 / absmax overflows float for subnormal rows.
      const double inverse = absmax > 0.0f ? 127.0 / absmax : 0.0;
      for (std::size_t d = 0; d < dim; ++d) {
        const double code = std::clamp(std::nearbyint(in[d] * inverse), -127.0, 127.0);
        row[d] = static_cast<std::byte>(static_cast<std::int8_t>(code));
      }
    }
  }
}

}  // namespace persona::detail
