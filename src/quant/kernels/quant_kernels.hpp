// The quantized products written once over xsimd batches and the QuantIo primitives of an Arch. Each lane
// holds one output row; a lane performs exactly the operations of the scalar oracle (quant_reference.cpp)
// in the same order, so every level agrees with it bit for bit. Each quant_<level>.cpp instantiates the
// table with make_quant_kernel_table<Arch>().
//
// Work is cut into blocks of RowVectors x L rows (L = lanes) and up to QuantIo::kTokenBlock tokens: the
// codes of a block are loaded and unpacked once and used for every token of the block.
#pragma once

#include "core/kernels/x86_io.hpp"
#include "quant/kernels/bf16_kernels.hpp"
#include "quant/kernels/quant_io.hpp"
#include "quant/kernels/quant_kernel_table.hpp"
#include "quant/quant_layout.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>

namespace persona::detail {

template <class Arch>
struct QuantKernels {
  using Io = QuantIo<Arch>;
  using F = xsimd::batch<float, Arch>;
  using I32 = xsimd::batch<std::int32_t, Arch>;
  using U8 = xsimd::batch<std::uint8_t, Arch>;
  using U16 = xsimd::batch<std::uint16_t, Arch>;
  using I16 = typename Io::I16;
  static constexpr std::size_t L = F::size;
  static_assert(kPanelRows % L == 0, "a row vector must lie inside one panel");

  // Rows [row, row + L) of W: where their codes and parameters start.
  struct RowVector {
    const std::uint8_t* codes;
    std::size_t param;  // index of the first row's parameter for group 0
  };

  static RowVector row_vector(const QuantProductArgs& a, std::size_t row) noexcept {
    return {a.codes + (row / kPanelRows) * a.tiles_per_panel * kTileBytes + (row % kPanelRows) * 4,
            param_index(a.groups, row, 0)};
  }

  static F load_params(const std::uint8_t* plane, DType type, std::size_t index) noexcept {
    switch (type) {
      case DType::f16: return HalfIo<Arch>::load_f16(reinterpret_cast<const std::uint16_t*>(plane) + index);
      case DType::bf16:
        return xsimd::bitwise_cast<F>(HalfIo<Arch>::load_u16(reinterpret_cast<const std::uint16_t*>(plane) + index)
                                      << 16);
      default: return F::load_unaligned(reinterpret_cast<const float*>(plane) + index);
    }
  }

  // Bit field `field` of every byte: the codes of columns 4 * field .. 4 * field + 3 of a tile.
  template <int Bits>
  static U8 unpack(U8 bytes, std::size_t field) noexcept {
    if constexpr (Bits == 8) {
      return bytes;
    } else {
      const auto shifted = xsimd::bitwise_cast<U8>(xsimd::bitwise_cast<U16>(bytes) >> static_cast<int>(field * Bits));
      return shifted & U8(static_cast<std::uint8_t>((1u << Bits) - 1));
    }
  }

  // y = value, or y = alpha * value + y when accumulating (one rounding, as the oracle's std::fma).
  static void store_rows(const QuantProductArgs& a, float* y, const F& value, std::size_t valid) noexcept {
    if (valid >= L) {
      (a.accumulate ? fused_multiply_add<Arch>(F(a.alpha), value, F::load_unaligned(y)) : value).store_unaligned(y);
    } else {
      alignas(64) float lanes[L];
      value.store_aligned(lanes);
      for (std::size_t i = 0; i < valid; ++i) y[i] = a.accumulate ? std::fma(a.alpha, lanes[i], y[i]) : lanes[i];
    }
  }

  template <std::size_t NV>
  static std::array<RowVector, NV> row_vectors(const QuantProductArgs& a, std::size_t row) noexcept {
    std::array<RowVector, NV> out;
    for (std::size_t v = 0; v < NV; ++v) out[v] = row_vector(a, row + v * L);
    return out;
  }

  template <class B, std::size_t NV, std::size_t NT>
  static void fill(B (&blocks)[NV][NT], const B& value) noexcept {
    for (auto& per_row : blocks) {
      for (B& b : per_row) b = value;
    }
  }

  // The block's outputs: y[token + t, row + v * L + lane] for the rows that exist.
  template <std::size_t NV, std::size_t NT>
  static void store_block(const QuantProductArgs& a, const F (&acc)[NV][NT], std::size_t row, std::size_t token,
                          std::size_t row_end) noexcept {
    for (std::size_t v = 0; v < NV && row + v * L < row_end; ++v) {
      for (std::size_t t = 0; t < NT; ++t) {
        store_rows(a, a.y + (token + t) * a.ldy + row + v * L, acc[v][t], row_end - row - v * L);
      }
    }
  }

  static std::int32_t broadcast_quad(const std::int8_t* p) noexcept {
    std::int32_t quad = 0;
    std::memcpy(&quad, p, 4);
    return quad;
  }

  // ---- int8 activations ---------------------------------------------------------------------------
  template <int Bits, bool Nf4, std::size_t NV, std::size_t NT>
  static void int8_block(const QuantProductArgs& args, std::size_t row, std::size_t token,
                         std::size_t row_end) noexcept {
    const QuantProductArgs a = args;  // see int8_short_rows
    constexpr bool kWide = Bits == 8 || Nf4;
    constexpr std::size_t kFields = 8 / Bits;
    constexpr std::size_t kTileColumns = 4 * kFields;
    // Narrow codes sum maddubs pairs in 16 bits over kSumTiles tiles, then widen once (exact, see QuantIo).
    constexpr bool kPairs = !kWide && Io::kPairSums;
    constexpr std::size_t kSumTiles = kPairs ? Io::kPairSumFields / kFields : std::size_t{1} << 30;
    const std::size_t tiles_per_group = a.group_size / kTileColumns;
    const std::int32_t correction = Io::template dot_bias<kWide> - code_offset(a, true);
    const auto rv = row_vectors<NV>(a, row);
    const std::int8_t* xq[NT];
    for (std::size_t t = 0; t < NT; ++t) xq[t] = a.xq + (token + t) * a.k;

    F acc[NV][NT];
    fill(acc, F(0.0f));
    for (std::size_t g = 0; g < a.groups; ++g) {
      I32 sum[NV][NT];
      fill(sum, I32(0));
      const std::size_t group_end = (g + 1) * tiles_per_group;
      for (std::size_t first = g * tiles_per_group; first < group_end; first += kSumTiles) {
        [[maybe_unused]] I16 pairs[NV][NT];
        if constexpr (kPairs) fill(pairs, I16(0));
        for (std::size_t tile = first; tile < std::min(first + kSumTiles, group_end); ++tile) {
          const std::size_t column = tile * kTileColumns;
          for (std::size_t v = 0; v < NV; ++v) {
            // 2 KiB ahead on each weight stream, so the unpacking overlaps the memory time (measured on 4096 x 4096
            // from DRAM, 1 thread: int4 GEMV median 324 -> 300 us; 1 and 8 KiB were worse).
            __builtin_prefetch(rv[v].codes + (tile + 32) * kTileBytes);
            const U8 bytes = U8::load_unaligned(rv[v].codes + tile * kTileBytes);
            for (std::size_t field = 0; field < kFields; ++field) {
              U8 codes = unpack<Bits>(bytes, field);
              if constexpr (Nf4) codes = Io::lookup16(codes, kNf4Int8Codes);
              for (std::size_t t = 0; t < NT; ++t) {
                const I32 x(broadcast_quad(xq[t] + column + 4 * field));
                if constexpr (kPairs) {
                  pairs[v][t] = Io::pair_dot(pairs[v][t], codes, x);
                } else {
                  sum[v][t] = Io::template dot4<kWide>(sum[v][t], codes, x);
                }
              }
            }
          }
        }
        if constexpr (kPairs) {
          for (std::size_t v = 0; v < NV; ++v) {
            for (std::size_t t = 0; t < NT; ++t) sum[v][t] = Io::widen_pairs(sum[v][t], pairs[v][t]);
          }
        }
      }
      for (std::size_t v = 0; v < NV; ++v) {
        F scale = load_params(a.scales, a.scale_type, rv[v].param + g * kPanelRows);
        if constexpr (Nf4) scale = scale * F(kInv127);
        const F minimum =
            a.minima != nullptr ? load_params(a.minima, a.scale_type, rv[v].param + g * kPanelRows) : F(0.0f);
        for (std::size_t t = 0; t < NT; ++t) {
          const std::int32_t x_sum = a.xq_sums[(token + t) * a.groups + g];
          const I32 centred = sum[v][t] + I32(correction * x_sum);
          const F inner = fused_multiply_add<Arch>(scale, xsimd::batch_cast<float>(centred),
                                                   minimum * F(static_cast<float>(x_sum)));
          acc[v][t] = fused_multiply_add<Arch>(F(a.x_scales[(token + t) * a.groups + g]), inner, acc[v][t]);
        }
      }
    }
    store_block(a, acc, row, token, row_end);
  }

  // ---- f32 activations ----------------------------------------------------------------------------
  template <int Bits, bool Nf4, std::size_t NV, std::size_t NT>
  static void f32_block(const QuantProductArgs& args, std::size_t row, std::size_t token,
                        std::size_t row_end) noexcept {
    const QuantProductArgs a = args;  // see int8_short_rows
    constexpr std::size_t kFields = 8 / Bits;
    constexpr std::size_t kTileColumns = 4 * kFields;
    const std::size_t tiles_per_group = a.group_size / kTileColumns;
    const I32 offset(code_offset(a, false));
    const I32 byte_mask(0xff);
    const auto rv = row_vectors<NV>(a, row);
    const float* x[NT];
    for (std::size_t t = 0; t < NT; ++t) x[t] = a.x + (token + t) * a.ldx;

    F acc[NV][NT];
    fill(acc, F(0.0f));
    for (std::size_t g = 0; g < a.groups; ++g) {
      F sum[NV][NT];
      fill(sum, F(0.0f));
      for (std::size_t tile = g * tiles_per_group; tile < (g + 1) * tiles_per_group; ++tile) {
        const std::size_t column = tile * kTileColumns;
        for (std::size_t v = 0; v < NV; ++v) {
          const U8 bytes = U8::load_unaligned(rv[v].codes + tile * kTileBytes);
          for (std::size_t field = 0; field < kFields; ++field) {
            const I32 quads = xsimd::bitwise_cast<I32>(unpack<Bits>(bytes, field));
            for (std::size_t j = 0; j < 4; ++j) {
              const I32 code = (quads >> static_cast<int>(8 * j)) & byte_mask;
              F value;
              if constexpr (Nf4) {
                value = Io::lookup16(code, kNf4Codebook.data());
              } else {
                value = xsimd::batch_cast<float>(code - offset);
              }
              for (std::size_t t = 0; t < NT; ++t) {
                sum[v][t] = fused_multiply_add<Arch>(value, F(x[t][column + 4 * field + j]), sum[v][t]);
              }
            }
          }
        }
      }
      for (std::size_t v = 0; v < NV; ++v) {
        const F scale = load_params(a.scales, a.scale_type, rv[v].param + g * kPanelRows);
        const F minimum =
            a.minima != nullptr ? load_params(a.minima, a.scale_type, rv[v].param + g * kPanelRows) : F(0.0f);
        for (std::size_t t = 0; t < NT; ++t) {
          acc[v][t] =
              acc[v][t] + fused_multiply_add<Arch>(scale, sum[v][t], minimum * F(a.x_sums[(token + t) * a.groups + g]));
        }
      }
    }
    store_block(a, acc, row, token, row_end);
  }

  // ---- short rows: one group of Tiles tiles per row (LoRA B, k = rank) --------------------------------
  // The operations of int8_block for one group, without its per-block set-up, which dominates when a row
  // is a tile or two: the token's activations stay in registers and the rows stream past them.
  template <int Bits, bool Nf4, std::size_t Tiles>
  static void int8_short_rows(const QuantProductArgs& args) noexcept {
    // A local copy: the stores to y cannot then alias the arguments, which stay in registers.
    const QuantProductArgs a = args;
    constexpr bool kWide = Bits == 8 || Nf4;
    constexpr std::size_t kFields = 8 / Bits;
    constexpr bool kPairs = !kWide && Io::kPairSums && Tiles * kFields <= Io::kPairSumFields;
    constexpr std::size_t kVectors = kPanelRows / L;
    const std::int32_t correction = Io::template dot_bias<kWide> - code_offset(a, true);
    const std::size_t row_begin = a.panel_begin * kPanelRows;
    const std::size_t row_end = std::min(a.n, a.panel_end * kPanelRows);
    for (std::size_t t = 0; t < a.m; ++t) {
      I32 x[Tiles * kFields];
      for (std::size_t q = 0; q < Tiles * kFields; ++q) x[q] = I32(broadcast_quad(a.xq + t * a.k + 4 * q));
      const std::int32_t x_sum = a.xq_sums[t];
      const I32 centring(correction * x_sum);
      const F x_scale(a.x_scales[t]);
      const F x_sum_f(static_cast<float>(x_sum));
      // A panel at a time (its row vectors side by side, for independent chains); with one group per
      // row, the parameters of row r are at index r.
      for (std::size_t row0 = row_begin; row0 < row_end; row0 += kPanelRows) {
        const std::uint8_t* codes_begin = a.codes + (row0 / kPanelRows) * Tiles * kTileBytes;
        I32 sum[kVectors];
        [[maybe_unused]] I16 pairs[kVectors];
        for (std::size_t v = 0; v < kVectors; ++v) {
          sum[v] = I32(0);
          if constexpr (kPairs) pairs[v] = I16(0);
        }
        for (std::size_t tile = 0; tile < Tiles; ++tile) {
          for (std::size_t v = 0; v < kVectors; ++v) {
            const U8 bytes = U8::load_unaligned(codes_begin + tile * kTileBytes + v * L * 4);
            for (std::size_t field = 0; field < kFields; ++field) {
              U8 codes = unpack<Bits>(bytes, field);
              if constexpr (Nf4) codes = Io::lookup16(codes, kNf4Int8Codes);
              if constexpr (kPairs) {
                pairs[v] = Io::pair_dot(pairs[v], codes, x[tile * kFields + field]);
              } else {
                sum[v] = Io::template dot4<kWide>(sum[v], codes, x[tile * kFields + field]);
              }
            }
          }
        }
        for (std::size_t v = 0; v < kVectors && row0 + v * L < row_end; ++v) {
          const std::size_t row = row0 + v * L;
          if constexpr (kPairs) sum[v] = Io::widen_pairs(sum[v], pairs[v]);
          F scale = load_params(a.scales, a.scale_type, row);
          if constexpr (Nf4) scale = scale * F(kInv127);
          const F minimum = a.minima != nullptr ? load_params(a.minima, a.scale_type, row) : F(0.0f);
          const F inner =
              fused_multiply_add<Arch>(scale, xsimd::batch_cast<float>(sum[v] + centring), minimum * x_sum_f);
          store_rows(a, a.y + t * a.ldy + row, fused_multiply_add<Arch>(x_scale, inner, F(0.0f)), row_end - row);
        }
      }
    }
  }

  // Rows of one group of at most four tiles take int8_short_rows; returns false for any other shape.
  template <int Bits, bool Nf4>
  static bool run_short_rows(const QuantProductArgs& a) noexcept {
    if (a.groups != 1) return false;
    switch (a.tiles_per_panel) {
      case 1: int8_short_rows<Bits, Nf4, 1>(a); return true;
      case 2: int8_short_rows<Bits, Nf4, 2>(a); return true;
      case 4: int8_short_rows<Bits, Nf4, 4>(a); return true;
      default: return false;
    }
  }

  // Walks the panels given in blocks of RowVectors row vectors (one where fewer rows are left).
  template <bool Int8, int Bits, bool Nf4>
  static void run(const QuantProductArgs& a) noexcept {
    if constexpr (Int8) {
      if (run_short_rows<Bits, Nf4>(a)) return;
    }
    if (a.m == 1) {
      run_rows<Int8, Bits, Nf4, Io::kDecodeRowVectors>(a);
    } else {
      run_rows<Int8, Bits, Nf4, Io::kRowVectors>(a);
    }
  }

  template <bool Int8, int Bits, bool Nf4, std::size_t RowVectors>
  static void run_rows(const QuantProductArgs& a) noexcept {
    const std::size_t stored_end = a.panel_end * kPanelRows;
    const std::size_t row_end = std::min(a.n, stored_end);
    for (std::size_t row = a.panel_begin * kPanelRows; row < row_end;) {
      if (row + RowVectors * L <= stored_end && row + (RowVectors - 1) * L < row_end) {
        run_tokens<Int8, Bits, Nf4, RowVectors>(a, row, row_end);
        row += RowVectors * L;
      } else {
        run_tokens<Int8, Bits, Nf4, 1>(a, row, row_end);
        row += L;
      }
    }
  }

  template <bool Int8, int Bits, bool Nf4, std::size_t NV>
  static void run_tokens(const QuantProductArgs& a, std::size_t row, std::size_t row_end) noexcept {
    std::size_t token = 0;
    for (; token + Io::kTokenBlock <= a.m; token += Io::kTokenBlock) {
      block<Int8, Bits, Nf4, NV, Io::kTokenBlock>(a, row, token, row_end);
    }
    for (; token < a.m; ++token) block<Int8, Bits, Nf4, NV, 1>(a, row, token, row_end);
  }

  template <bool Int8, int Bits, bool Nf4, std::size_t NV, std::size_t NT>
  static void block(const QuantProductArgs& a, std::size_t row, std::size_t token, std::size_t row_end) noexcept {
    if constexpr (Int8) {
      int8_block<Bits, Nf4, NV, NT>(a, row, token, row_end);
    } else {
      f32_block<Bits, Nf4, NV, NT>(a, row, token, row_end);
    }
  }

  // ---- activations for the int8 path ----------------------------------------------------------------
  // The oracle's operations per element (quantize_activations_ref). Codes are stored four vectors at a
  // time: groups of fewer (32 at AVX-512) share a block of four, each vector with its own group's
  // multiplier; groups that are not whole vectors, or rows that are not whole blocks, take the oracle.
  static bool quantize_activations(const float* x, std::size_t k, std::size_t group_size, std::int8_t* codes,
                                   float* scales, std::int32_t* code_sums) noexcept {
    if (group_size % L != 0 || k % (4 * L) != 0) {
      return quantize_activations_ref(x, k, group_size, codes, scales, code_sums);
    }
    // Two passes, so that each group's scale (a horizontal max and a division) does not stall the next
    // group's loads: absmax of every group into scales, then the codes.
    const std::size_t groups = k / group_size;
    const F max_finite(std::numeric_limits<float>::max());
    auto finite = F(0.0f) <= max_finite;
    for (std::size_t g = 0; g < groups; ++g) {
      F absmax(0.0f);
      for (std::size_t c = g * group_size; c < (g + 1) * group_size; c += L) {
        const F v = xsimd::abs(F::load_unaligned(x + c));
        finite = finite && (v <= max_finite);  // false for NaN too
        absmax = xsimd::max(absmax, v);
      }
      scales[g] = reduce_max<Arch>(absmax);
    }
    if (!xsimd::all(finite)) return false;
    if (group_size % (4 * L) != 0) {
      for (std::size_t g = 0; g < groups; ++g) code_sums[g] = 0;
      for (std::size_t c = 0; c < k; c += 4 * L) {
        I32 q[4];
        for (std::size_t j = 0; j < 4; ++j) {
          const std::size_t g = (c + j * L) / group_size;
          const float max = scales[g];
          const ActivationScale s = activation_scale(max);
          const bool divide = max > 0.0f && !s.finite;
          const F v = F::load_unaligned(x + c + j * L);
          q[j] = xsimd::nearbyint_as_int(divide ? v / F(max) * F(127.0f) : v * F(max > 0.0f ? s.multiplier : 0.0f));
          code_sums[g] += xsimd::hadd(q[j]);
        }
        Io::store_i8x4(codes + c, q[0], q[1], q[2], q[3]);
      }
      for (std::size_t g = 0; g < groups; ++g) scales[g] /= 127.0f;
      return true;
    }
    for (std::size_t g = 0; g < groups; ++g) {
      const float max = scales[g];
      const ActivationScale s = activation_scale(max);
      // absmax = 0 multiplies by 0 (every code 0, as in the oracle); the rare groups whose 127 / absmax
      // overflows divide instead.
      const bool divide = max > 0.0f && !s.finite;
      const F multiplier(max > 0.0f ? s.multiplier : 0.0f);
      I32 sum(0);
      for (std::size_t c = g * group_size; c < (g + 1) * group_size; c += 4 * L) {
        I32 q[4];
        for (std::size_t j = 0; j < 4; ++j) {
          const F v = F::load_unaligned(x + c + j * L);
          q[j] = xsimd::nearbyint_as_int(divide ? v / F(max) * F(127.0f) : v * multiplier);
          sum += q[j];
        }
        Io::store_i8x4(codes + c, q[0], q[1], q[2], q[3]);
      }
      scales[g] = max / 127.0f;
      code_sums[g] = xsimd::hadd(sum);
    }
    return true;
  }

  template <bool Int8>
  static void product(const QuantProductArgs& a) noexcept {
    if (a.codebook == QuantCodebook::nf4) return run<Int8, 4, true>(a);
    switch (a.bits) {
      case 8: return run<Int8, 8, false>(a);
      case 4: return run<Int8, 4, false>(a);
      default: return run<Int8, 2, false>(a);
    }
  }
};

template <class Arch>
constexpr QuantKernelTable make_quant_kernel_table() {
  return {QuantKernels<Arch>::template product<false>, QuantKernels<Arch>::template product<true>,
          QuantKernels<Arch>::quantize_activations, Bf16Kernels<Arch>::product};
}

}  // namespace persona::detail
