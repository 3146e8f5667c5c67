// The quantized-product kernels one SIMD level provides, over validated, prepared inputs. The generic
// kernels are in quant_kernels.hpp, the oracles in quant_reference.cpp (this folder).
#pragma once

#include "persona/core/cpu_features.hpp"
#include "persona/core/dtype.hpp"
#include "persona/quant/quant_spec.hpp"

#include <cstddef>
#include <cstdint>
#include <limits>

namespace persona::detail {

// y[m, n] = x[m, k] · W[n, k]^T for the row panels [panel_begin, panel_end) of W.
struct QuantProductArgs {
  // Weights, as QuantizedMatrix stores them.
  const std::uint8_t* codes;   // [panels, tiles_per_panel, 64]
  const std::uint8_t* scales;  // [panels, groups, 16] of scale_type
  const std::uint8_t* minima;  // the same, or null for symmetric specs
  int bits;
  std::size_t group_size;
  DType scale_type;
  QuantCodebook codebook;
  std::size_t tiles_per_panel, groups;
  std::size_t n, k;  // valid rows of W (the last panel may be padded), columns

  // Activations. f32 path: x and x_sums. int8 path: xq, x_scales and xq_sums.
  std::size_t m;
  const float* x;  // [m, k], row stride ldx
  std::size_t ldx;
  const float* x_sums;          // [m, groups]: sum of x over each group, in column order
  const std::int8_t* xq;        // [m, k] contiguous
  const float* x_scales;        // [m, groups]
  const std::int32_t* xq_sums;  // [m, groups]

  float* y;  // [m, n], row stride ldy: overwritten, or y += alpha * (x W^T) when accumulate is set
  std::size_t ldy;
  float alpha;
  bool accumulate;
  std::size_t panel_begin, panel_end;
};

// What the kernels subtract from each code before multiplying: 2^(bits-1) for symmetric linear codes,
// 127 for NF4 on the int8 path (its codes there are round(127 nf4) + 127), 0 otherwise.
constexpr int code_offset(const QuantProductArgs& a, bool int8_path) noexcept {
  if (a.codebook == QuantCodebook::nf4) return int8_path ? 127 : 0;
  return a.minima == nullptr ? 1 << (a.bits - 1) : 0;
}

// One token's activations x[k] for the int8 path, per group of group_size: scale = absmax / 127,
// code = nearbyint(x * (127 / absmax)), or nearbyint((x / absmax) * 127) where 127 / absmax overflows
// (absmax below ~3.7e-37), code_sum = the group's sum of codes. Codes stay in [-127, 127]: x * RN(127 /
// absmax) exceeds 127 by at most a few ulps. Returns false, with the outputs unspecified, if any x is
// NaN or infinite.
using QuantizeActivationsFn = bool (*)(const float* x, std::size_t k, std::size_t group_size, std::int8_t* codes,
                                       float* scales, std::int32_t* code_sums) noexcept;

// y[i, r] = sum_j x[i, j] widen(w[r, j]) for the rows r in [row_begin, row_end) of a bf16 weight w [n, k]
// (row stride k) and every row i < m of x.
struct Bf16ProductArgs {
  const std::uint16_t* w;
  std::size_t k;
  const float* x;  // [m, k], row stride ldx
  std::size_t ldx, m;
  float* y;  // [m, n], row stride ldy
  std::size_t ldy;
  std::size_t row_begin, row_end;
};

struct QuantKernelTable {
  void (*product_f32)(const QuantProductArgs& args) noexcept;
  void (*product_int8)(const QuantProductArgs& args) noexcept;
  QuantizeActivationsFn quantize_activations;
  void (*product_bf16)(const Bf16ProductArgs& args) noexcept;
};

struct ActivationScale {
  float multiplier;  // 127 / absmax
  bool finite;       // false: divide by absmax, then multiply by 127
};
inline ActivationScale activation_scale(float absmax) noexcept {
  const float multiplier = 127.0f / absmax;
  return {multiplier, multiplier <= std::numeric_limits<float>::max()};
}

bool quantize_activations_ref(const float* x, std::size_t k, std::size_t group_size, std::int8_t* codes, float* scales,
                              std::int32_t* code_sums) noexcept;

// The oracles, which the scalar level runs.
const QuantKernelTable& reference_quant_kernels() noexcept;
// The kernels of one level (quant_dispatch.cpp); the level must be in supported_isa_levels().
const QuantKernelTable& quant_kernels(IsaLevel level) noexcept;

// The table of each level, for quant_dispatch.cpp: the oracles (quant_reference.cpp) and one per
// quant_<level>.cpp, of which only the levels this build compiles exist.
extern const QuantKernelTable kQuantReferenceKernels;
extern const QuantKernelTable kQuantAvx2Kernels;
extern const QuantKernelTable kQuantAvx512Kernels;
extern const QuantKernelTable kQuantAvx512VnniKernels;

}  // namespace persona::detail
