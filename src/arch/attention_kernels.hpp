// The paged attention kernel written once over xsimd batches; each src/arch/<isa>.cpp instantiates the
// table with make_attention_kernel_table<Arch>(). The scalar oracle is in src/kv/attention_reference.cpp.
//
// Per tile of at most kAttentionTile tokens (never crossing a block): scores of every row against each K
// row, the online-softmax update (rescale by exp(old max - new max)), then the V rows weighted into the
// accumulators. Rows go four at a time so that one K or V load feeds four FMAs.
#pragma once

#include "arch/x86_io.hpp"
#include "kv/attention_kernel_table.hpp"
#include "kv/kv_storage.hpp"

#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace persona::detail {

template <class Arch>
struct AttentionKernels {
  using F = xsimd::batch<float, Arch>;
  static constexpr std::size_t L = F::size;
  static constexpr std::size_t kRowGroup = 4;
  static_assert(kAttentionTile % L == 0);

  template <DType S>
  static F load(const std::byte* row, std::size_t d) noexcept {
    if constexpr (S == DType::f32) {
      return F::load_unaligned(reinterpret_cast<const float*>(row) + d);
    } else if constexpr (S == DType::f16) {
      return HalfIo<Arch>::load_f16(reinterpret_cast<const std::uint16_t*>(row) + d);
    } else if constexpr (S == DType::bf16) {
      return xsimd::bitwise_cast<F>(HalfIo<Arch>::load_u16(reinterpret_cast<const std::uint16_t*>(row) + d) << 16);
    } else {
      return load_i8_as_f32<Arch>(reinterpret_cast<const std::int8_t*>(row) + d);
    }
  }

  template <DType S>
  static float load_one(const std::byte* row, std::size_t d) noexcept {
    if constexpr (S == DType::f32) {
      return reinterpret_cast<const float*>(row)[d];
    } else if constexpr (S == DType::f16) {
      return f16_bits_to_f32(reinterpret_cast<const std::uint16_t*>(row)[d]);
    } else if constexpr (S == DType::bf16) {
      return bf16_bits_to_f32(reinterpret_cast<const std::uint16_t*>(row)[d]);
    } else {
      return static_cast<float>(reinterpret_cast<const std::int8_t*>(row)[d]);
    }
  }

  // scores[i] = q[i] . key for G rows.
  template <DType S, std::size_t G>
  static void dot_rows(const std::byte* key, const float* const* q, std::size_t dim, float* scores) noexcept {
    F acc[G];
    for (std::size_t i = 0; i < G; ++i) acc[i] = F(0.0f);
    std::size_t d = 0;
    for (; d + L <= dim; d += L) {
      const F k = load<S>(key, d);
      for (std::size_t i = 0; i < G; ++i) acc[i] = fused_multiply_add<Arch>(F::load_unaligned(q[i] + d), k, acc[i]);
    }
    for (std::size_t i = 0; i < G; ++i) scores[i] = xsimd::hadd(acc[i]);
    for (; d < dim; ++d) {
      const float k = load_one<S>(key, d);
      for (std::size_t i = 0; i < G; ++i) scores[i] += q[i][d] * k;
    }
  }

  // acc[i][0..dim) += sum_j weights[i][j] * value_j for G rows and n value rows `stride` bytes apart.
  template <DType S, std::size_t G>
  static void accumulate_rows(const std::byte* value, std::size_t stride, std::size_t n, std::size_t dim,
                              float* const* acc, const float* const* weights) noexcept {
    std::size_t d = 0;
    for (; d + L <= dim; d += L) {
      F a[G];
      for (std::size_t i = 0; i < G; ++i) a[i] = F::load_aligned(acc[i] + d);
      for (std::size_t j = 0; j < n; ++j) {
        const F v = load<S>(value + j * stride, d);
        for (std::size_t i = 0; i < G; ++i) a[i] = fused_multiply_add<Arch>(F(weights[i][j]), v, a[i]);
      }
      for (std::size_t i = 0; i < G; ++i) a[i].store_aligned(acc[i] + d);
    }
    for (; d < dim; ++d) {
      for (std::size_t j = 0; j < n; ++j) {
        const float v = load_one<S>(value + j * stride, d);
        for (std::size_t i = 0; i < G; ++i) acc[i][d] += weights[i][j] * v;
      }
    }
  }

  // Runs body.template operator()<G>(first) over rows [0, count) in groups of kRowGroup and a remainder.
  template <class Body>
  static void for_row_groups(std::size_t count, Body&& body) noexcept {
    std::size_t r = 0;
    for (; r + kRowGroup <= count; r += kRowGroup) body.template operator()<kRowGroup>(r);
    switch (count - r) {
      case 3: body.template operator()<3>(r); break;
      case 2: body.template operator()<2>(r); break;
      case 1: body.template operator()<1>(r); break;
      default: break;
    }
  }

  template <DType S>
  static void attend_typed(const AttentionHead& head, const AttentionRows& rows) noexcept {
    const kv::KvLayerView& layer = head.layer;
    const std::size_t dim = layer.head_dim, block_size = layer.block_size, mask = block_size - 1;
    const std::size_t stride = layer.kv_heads * dim * size_of(S);  // bytes from one token's row to the next
    const std::size_t count = rows.count;
    std::size_t max_context = 0;
    for (std::size_t r = 0; r < count; ++r) max_context = std::max(max_context, rows.context[r]);

    alignas(64) float acc[kMaxAttentionRows][kv::kMaxHeadDim];
    alignas(64) float weights[kMaxAttentionRows][kAttentionTile];
    float running_max[kMaxAttentionRows], running_sum[kMaxAttentionRows];
    float* acc_rows[kMaxAttentionRows];
    const float* weight_rows[kMaxAttentionRows];
    for (std::size_t r = 0; r < count; ++r) {
      std::fill_n(acc[r], dim, 0.0f);
      running_max[r] = -std::numeric_limits<float>::infinity();
      running_sum[r] = 0.0f;
      acc_rows[r] = acc[r];
      weight_rows[r] = weights[r];
    }
    const F minus_infinity(-std::numeric_limits<float>::infinity());

    for (std::size_t pos = 0; pos < max_context;) {
      const std::size_t in_block = pos & mask;
      const std::size_t n = std::min({kAttentionTile, block_size - in_block, max_context - pos});
      const std::size_t slot = static_cast<std::size_t>(head.blocks[pos >> head.block_shift]) * block_size + in_block;
      const std::byte* keys = layer.k + kv_row_offset(layer, slot, head.head);
      const std::byte* values = layer.v + kv_row_offset(layer, slot, head.head);

      // Scores, stored transposed into weights[r][j].
      for (std::size_t j = 0; j < n; ++j) {
        float key_scale = head.scale;
        if constexpr (S == DType::i8) key_scale *= layer.k_scale[(slot + j) * layer.kv_heads + head.head];
        for_row_groups(count, [&]<std::size_t G>(std::size_t first) {
          float scores[G];
          dot_rows<S, G>(keys + j * stride, rows.q + first, dim, scores);
          for (std::size_t i = 0; i < G; ++i) weights[first + i][j] = scores[i] * key_scale;
        });
      }

      // Online softmax: positions past a row's context weigh zero.
      const std::size_t lanes = (n + L - 1) / L * L;
      for (std::size_t r = 0; r < count; ++r) {
        const std::size_t valid = rows.context[r] > pos ? std::min(n, rows.context[r] - pos) : 0;
        float* w = weights[r];
        std::fill(w + valid, w + lanes, -std::numeric_limits<float>::infinity());
        if (valid == 0) {
          std::fill_n(w, lanes, 0.0f);
          continue;
        }
        F tile_max = minus_infinity;
        for (std::size_t j = 0; j < lanes; j += L) tile_max = xsimd::max(tile_max, F::load_aligned(w + j));
        const float next = std::max(running_max[r], QuantIo<Arch>::reduce_max(tile_max));
        const float correction = std::exp(running_max[r] - next);
        F tile_sum(0.0f);
        for (std::size_t j = 0; j < lanes; j += L) {
          const F e = xsimd::select(F::load_aligned(w + j) == minus_infinity, F(0.0f),
                                    xsimd::exp(F::load_aligned(w + j) - F(next)));
          tile_sum += e;
          e.store_aligned(w + j);
        }
        running_sum[r] = running_sum[r] * correction + xsimd::hadd(tile_sum);
        running_max[r] = next;
        if (correction != 1.0f) {
          for (std::size_t d = 0; d < dim; ++d) acc[r][d] *= correction;
        }
        if constexpr (S == DType::i8) {
          for (std::size_t j = 0; j < valid; ++j) w[j] *= layer.v_scale[(slot + j) * layer.kv_heads + head.head];
        }
      }

      for_row_groups(count, [&]<std::size_t G>(std::size_t first) {
        accumulate_rows<S, G>(values, stride, n, dim, acc_rows + first, weight_rows + first);
      });
      pos += n;
    }

    for (std::size_t r = 0; r < count; ++r) {
      const float inverse = 1.0f / running_sum[r];
      for (std::size_t d = 0; d < dim; ++d) rows.out[r][d] = acc[r][d] * inverse;
    }
  }

  static void attend(const AttentionHead& head, const AttentionRows& rows) noexcept {
    switch (head.layer.storage) {
      case DType::f16: attend_typed<DType::f16>(head, rows); break;
      case DType::bf16: attend_typed<DType::bf16>(head, rows); break;
      case DType::i8: attend_typed<DType::i8>(head, rows); break;
      default: attend_typed<DType::f32>(head, rows); break;
    }
  }
};

template <class Arch>
constexpr AttentionKernelTable make_attention_kernel_table() {
  return AttentionKernelTable{&AttentionKernels<Arch>::attend};
}

}  // namespace persona::detail
