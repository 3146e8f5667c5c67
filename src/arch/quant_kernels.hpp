// The quantized products written once over xsimd batches and the QuantIo primitives of an Arch. Each lane
// holds one output row; a lane performs exactly the operations of the scalar oracle
// (src/quant/quant_reference.cpp) in the same order, so every level agrees with it bit for bit.
//
// Work is cut into blocks of RowVectors x L rows (L = lanes) and up to QuantIo::kTokenBlock tokens: the
// codes of a block are loaded and unpacked once and used for every token of the block.
#pragma once

#include "arch/x86_io.hpp"
#include "quant/quant_kernel_table.hpp"
#include "quant/quant_layout.hpp"

#include <algorithm>
#include <array>
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

  static void store_rows(float* y, const F& value, std::size_t valid) noexcept {
    if (valid >= L) {
      value.store_unaligned(y);
    } else {
      alignas(64) float lanes[L];
      value.store_aligned(lanes);
      std::memcpy(y, lanes, valid * sizeof(float));
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
        store_rows(a.y + (token + t) * a.ldy + row + v * L, acc[v][t], row_end - row - v * L);
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
  static void int8_block(const QuantProductArgs& a, std::size_t row, std::size_t token, std::size_t row_end) noexcept {
    constexpr bool kWide = Bits == 8 || Nf4;
    constexpr std::size_t kFields = 8 / Bits;
    constexpr std::size_t kTileColumns = 4 * kFields;
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
      for (std::size_t tile = g * tiles_per_group; tile < (g + 1) * tiles_per_group; ++tile) {
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
              sum[v][t] = Io::template dot4<kWide>(sum[v][t], codes, x);
            }
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
  static void f32_block(const QuantProductArgs& a, std::size_t row, std::size_t token, std::size_t row_end) noexcept {
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

  // Walks the panels given in blocks of RowVectors row vectors (one where fewer rows are left).
  template <bool Int8, int Bits, bool Nf4>
  static void run(const QuantProductArgs& a) noexcept {
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
  // The oracle's operations per element (quantize_activations_ref); groups narrower than a vector take it.
  static bool quantize_activations(const float* x, std::size_t k, std::size_t group_size, std::int8_t* codes,
                                   float* scales, std::int32_t* code_sums) noexcept {
    if (group_size % L != 0) return quantize_activations_ref(x, k, group_size, codes, scales, code_sums);
    const F max_finite(std::numeric_limits<float>::max());
    for (std::size_t g = 0; g < k / group_size; ++g) {
      const float* group = x + g * group_size;
      F absmax(0.0f);
      auto finite = absmax <= max_finite;
      for (std::size_t c = 0; c < group_size; c += L) {
        const F v = xsimd::abs(F::load_unaligned(group + c));
        finite = finite && (v <= max_finite);  // false for NaN too
        absmax = xsimd::max(absmax, v);
      }
      if (!xsimd::all(finite)) return false;
      alignas(64) float lanes[L];
      absmax.store_aligned(lanes);
      const float max = *std::max_element(lanes, lanes + L);
      I32 sum(0);
      for (std::size_t c = 0; c < group_size; c += L) {
        I32 q(0);
        if (max > 0.0f) q = xsimd::nearbyint_as_int(F::load_unaligned(group + c) / F(max) * F(127.0f));
        Io::store_i8(codes + g * group_size + c, q);
        sum += q;
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
          QuantKernels<Arch>::quantize_activations};
}

}  // namespace persona::detail
