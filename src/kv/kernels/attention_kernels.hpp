// The paged attention kernel written once over xsimd batches; each attention_<level>.cpp instantiates the
// table with make_attention_kernel_table<Arch>(). The scalar oracle is in attention_reference.cpp.
//
// Per tile of at most kAttentionTile tokens (rows found through the block table): scores of every row against each K
// row, the online-softmax update (rescale by exp(old max - new max)), then the V rows weighted into the
// accumulators. Rows go four at a time so that one K or V load feeds four FMAs.
#pragma once

#include "core/kernels/x86_io.hpp"
#include "kv/kernels/attention_kernel_table.hpp"
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
  static constexpr std::size_t kPrefetchDistance = 4;

  static void prefetch_row(const std::byte* row, std::size_t bytes) noexcept {
    for (std::size_t offset = 0; offset < bytes; offset += 64) __builtin_prefetch(row + offset);
  }
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

  // scores[i] = q[i] . key for G rows. Two vectors a step: 2 G independent FMA chains cover the FMA
  // latency (one chain per row would wait on it).
  template <DType S, std::size_t G>
  static void dot_rows(const std::byte* key, const float* const* q, std::size_t dim, float* scores) noexcept {
    F acc0[G], acc1[G];
    for (std::size_t i = 0; i < G; ++i) acc0[i] = acc1[i] = F(0.0f);
    std::size_t d = 0;
    for (; d + 2 * L <= dim; d += 2 * L) {
      const F k0 = load<S>(key, d), k1 = load<S>(key, d + L);
      for (std::size_t i = 0; i < G; ++i) {
        acc0[i] = fused_multiply_add<Arch>(F::load_unaligned(q[i] + d), k0, acc0[i]);
        acc1[i] = fused_multiply_add<Arch>(F::load_unaligned(q[i] + d + L), k1, acc1[i]);
      }
    }
    for (; d + L <= dim; d += L) {
      const F k = load<S>(key, d);
      for (std::size_t i = 0; i < G; ++i) acc0[i] = fused_multiply_add<Arch>(F::load_unaligned(q[i] + d), k, acc0[i]);
    }
    if constexpr (G == 4 && !Avx512Family<Arch>) {
      // Four horizontal sums at once: three hadds and one 128-bit add, not four reductions of five steps.
      const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(acc0[0] + acc1[0], acc0[1] + acc1[1]),
                                      _mm256_hadd_ps(acc0[2] + acc1[2], acc0[3] + acc1[3]));
      _mm_storeu_ps(scores, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
    } else {
      for (std::size_t i = 0; i < G; ++i) scores[i] = xsimd::hadd(acc0[i] + acc1[i]);
    }
    for (; d < dim; ++d) {
      const float k = load_one<S>(key, d);
      for (std::size_t i = 0; i < G; ++i) scores[i] += q[i][d] * k;
    }
  }

  // acc[i][0..dim) += sum_j weights[i][j] * values[j] for G rows and n value rows; two vectors of each
  // row at a time, so that 2 G independent FMA chains cover the FMA latency.
  template <DType S, std::size_t G>
  static void accumulate_rows(const std::byte* const* values, std::size_t n, std::size_t dim, float* const* acc,
                              const float* const* weights) noexcept {
    std::size_t d = 0;
    for (; d + 2 * L <= dim; d += 2 * L) {
      F a0[G], a1[G];
      for (std::size_t i = 0; i < G; ++i) {
        a0[i] = F::load_aligned(acc[i] + d);
        a1[i] = F::load_aligned(acc[i] + d + L);
      }
      for (std::size_t j = 0; j < n; ++j) {
        const F v0 = load<S>(values[j], d), v1 = load<S>(values[j], d + L);
        for (std::size_t i = 0; i < G; ++i) {
          const F w(weights[i][j]);
          a0[i] = fused_multiply_add<Arch>(w, v0, a0[i]);
          a1[i] = fused_multiply_add<Arch>(w, v1, a1[i]);
        }
      }
      for (std::size_t i = 0; i < G; ++i) {
        a0[i].store_aligned(acc[i] + d);
        a1[i].store_aligned(acc[i] + d + L);
      }
    }
    for (; d + L <= dim; d += L) {
      F a[G];
      for (std::size_t i = 0; i < G; ++i) a[i] = F::load_aligned(acc[i] + d);
      for (std::size_t j = 0; j < n; ++j) {
        const F v = load<S>(values[j], d);
        for (std::size_t i = 0; i < G; ++i) a[i] = fused_multiply_add<Arch>(F(weights[i][j]), v, a[i]);
      }
      for (std::size_t i = 0; i < G; ++i) a[i].store_aligned(acc[i] + d);
    }
    for (; d < dim; ++d) {
      for (std::size_t j = 0; j < n; ++j) {
        const float v = load_one<S>(values[j], d);
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
    const KvLayerView& layer = head.layer;
    const std::size_t dim = layer.head_dim, mask = layer.block_size - 1;
    const std::size_t row_bytes = dim * size_of(S);
    const std::size_t count = rows.count;
    std::size_t max_context = 0, min_start = rows.start[0];
    for (std::size_t r = 0; r < count; ++r) {
      max_context = std::max(max_context, rows.context[r]);
      min_start = std::min(min_start, rows.start[r]);
    }

    alignas(64) float acc[kMaxAttentionRows][kMaxHeadDim];
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

    // Tiles of kAttentionTile tokens whatever the block size: the per-tile softmax work stays amortized
    // over as many tokens with blocks of 1 or 16 as on contiguous KV.
    const auto row_at = [&](std::size_t position) {
      return layer.row_index(static_cast<std::size_t>(head.blocks[position >> head.block_shift]), position & mask,
                             head.head);
    };
    for (std::size_t pos = min_start, n = 0; pos < max_context; pos += n) {
      n = std::min(kAttentionTile, max_context - pos);
      std::size_t tile_rows[kAttentionTile];
      const std::byte* value_rows[kAttentionTile];
      for (std::size_t j = 0; j < n; ++j) {
        tile_rows[j] = row_at(pos + j);
        value_rows[j] = layer.v + tile_rows[j] * row_bytes;
      }

      // Scores, stored transposed into weights[r][j]. In the nhd layout one head's rows are kv_heads *
      // head_dim elements apart (a page for 8 heads of 128 f32): too far for the hardware prefetcher, so
      // each K and V row is requested kPrefetchDistance tokens ahead.
      for (std::size_t j = 0; j < n; ++j) {
        if (pos + j + kPrefetchDistance < max_context) {
          const std::size_t ahead = row_at(pos + j + kPrefetchDistance) * row_bytes;
          prefetch_row(layer.k + ahead, row_bytes);
          prefetch_row(layer.v + ahead, row_bytes);
        }
        float key_scale = head.scale;
        if constexpr (S == DType::i8) key_scale *= layer.k_scale[tile_rows[j]];
        for_row_groups(count, [&]<std::size_t G>(std::size_t first) {
          float scores[G];
          dot_rows<S, G>(layer.k + tile_rows[j] * row_bytes, rows.q + first, dim, scores);
          // Clamped: a score that overflows to infinity would turn the softmax into NaN.
          for (std::size_t i = 0; i < G; ++i) {
            weights[first + i][j] = std::clamp(scores[i] * key_scale, -std::numeric_limits<float>::max(),
                                               std::numeric_limits<float>::max());
          }
        });
      }

      // Online softmax: positions outside a row's [start, context) weigh zero.
      const std::size_t lanes = (n + L - 1) / L * L;
      for (std::size_t r = 0; r < count; ++r) {
        const std::size_t valid = rows.context[r] > pos ? std::min(n, rows.context[r] - pos) : 0;
        const std::size_t skipped = std::min(valid, rows.start[r] > pos ? rows.start[r] - pos : 0);
        float* w = weights[r];
        std::fill(w + valid, w + lanes, -std::numeric_limits<float>::infinity());
        std::fill(w, w + skipped, -std::numeric_limits<float>::infinity());
        if (valid == skipped) {
          std::fill_n(w, lanes, 0.0f);
          continue;
        }
        F tile_max = minus_infinity;
        for (std::size_t j = 0; j < lanes; j += L) tile_max = xsimd::max(tile_max, F::load_aligned(w + j));
        const float next = std::max(running_max[r], reduce_max<Arch>(tile_max));
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
          for (std::size_t j = 0; j < valid; ++j) w[j] *= layer.v_scale[tile_rows[j]];
        }
      }

      for_row_groups(count, [&]<std::size_t G>(std::size_t first) {
        accumulate_rows<S, G>(value_rows, n, dim, acc_rows + first, weight_rows + first);
      });
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
