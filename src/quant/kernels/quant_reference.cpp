// The scalar oracles of the quantized products. Each output is computed with exactly the operations, in
// exactly the order, that every SIMD lane performs (quant_kernels.hpp), so results agree bit for bit; the
// scalar level runs these.
#include "persona/core/dtype.hpp"
#include "quant/kernels/quant_kernel_table.hpp"
#include "quant/quant_layout.hpp"

#include <algorithm>
#include <cmath>

namespace persona::detail {
namespace {

// Per group, both paths compute  inner = fma(scale, sum, minimum * x_sum)  where `sum` is over the
// group's centred codes (code - code_offset) times x, exact in int32 on the int8 path. Symmetric and NF4
// specs centre their codes (minimum 0), so no large terms cancel; asymmetric specs keep a minimum.
struct GroupParams {
  float scale, minimum;
};

GroupParams group_params(const QuantProductArgs& a, std::size_t row, std::size_t group, bool int8_path) noexcept {
  const std::size_t index = param_index(a.groups, row, group);
  const float scale = read_param(a.scales, a.scale_type, index);
  if (a.codebook == QuantCodebook::nf4 && int8_path) return {scale * kInv127, 0.0f};
  return {scale, a.minima != nullptr ? read_param(a.minima, a.scale_type, index) : 0.0f};
}

void product_f32_ref(const QuantProductArgs& a) noexcept {
  const std::size_t row_end = std::min(a.n, a.panel_end * kPanelRows);
  const int offset = code_offset(a, false);
  for (std::size_t t = 0; t < a.m; ++t) {
    const float* x = a.x + t * a.ldx;
    for (std::size_t r = a.panel_begin * kPanelRows; r < row_end; ++r) {
      float acc = 0.0f;
      for (std::size_t g = 0; g < a.groups; ++g) {
        float sum = 0.0f;
        for (std::size_t c = g * a.group_size; c < (g + 1) * a.group_size; ++c) {
          const std::uint8_t code = read_code(a.codes, a.tiles_per_panel, a.bits, r, c);
          const float v = a.codebook == QuantCodebook::nf4 ? kNf4Codebook[code] : static_cast<float>(code - offset);
          sum = std::fma(v, x[c], sum);
        }
        const GroupParams p = group_params(a, r, g, false);
        acc = acc + std::fma(p.scale, sum, p.minimum * a.x_sums[t * a.groups + g]);
      }
      float& out = a.y[t * a.ldy + r];
      out = a.accumulate ? std::fma(a.alpha, acc, out) : acc;
    }
  }
}

void product_int8_ref(const QuantProductArgs& a) noexcept {
  const std::size_t row_end = std::min(a.n, a.panel_end * kPanelRows);
  const int offset = code_offset(a, true);
  for (std::size_t t = 0; t < a.m; ++t) {
    const std::int8_t* xq = a.xq + t * a.k;
    for (std::size_t r = a.panel_begin * kPanelRows; r < row_end; ++r) {
      float acc = 0.0f;
      for (std::size_t g = 0; g < a.groups; ++g) {
        std::int32_t sum = 0;
        for (std::size_t c = g * a.group_size; c < (g + 1) * a.group_size; ++c) {
          std::uint8_t code = read_code(a.codes, a.tiles_per_panel, a.bits, r, c);
          if (a.codebook == QuantCodebook::nf4) code = kNf4Int8Codes[code];
          sum += (static_cast<std::int32_t>(code) - offset) * xq[c];
        }
        const GroupParams p = group_params(a, r, g, true);
        const float x_sum = static_cast<float>(a.xq_sums[t * a.groups + g]);
        const float inner = std::fma(p.scale, static_cast<float>(sum), p.minimum * x_sum);
        acc = std::fma(a.x_scales[t * a.groups + g], inner, acc);
      }
      float& out = a.y[t * a.ldy + r];
      out = a.accumulate ? std::fma(a.alpha, acc, out) : acc;
    }
  }
}

// Double accumulation in column order of the widened weights.
void product_bf16_ref(const Bf16ProductArgs& a) noexcept {
  for (std::size_t r = a.row_begin; r < a.row_end; ++r) {
    const std::uint16_t* w = a.w + r * a.k;
    for (std::size_t i = 0; i < a.m; ++i) {
      const float* x = a.x + i * a.ldx;
      double sum = 0.0;
      for (std::size_t j = 0; j < a.k; ++j) sum += static_cast<double>(x[j]) * bf16_bits_to_f32(w[j]);
      a.y[i * a.ldy + r] = static_cast<float>(sum);
    }
  }
}

}  // namespace

constinit const QuantKernelTable kQuantReferenceKernels{product_f32_ref, product_int8_ref, quantize_activations_ref,
                                                        product_bf16_ref};

bool quantize_activations_ref(const float* x, std::size_t k, std::size_t group_size, std::int8_t* codes, float* scales,
                              std::int32_t* code_sums) noexcept {
  for (std::size_t g = 0; g < k / group_size; ++g) {
    const float* group = x + g * group_size;
    float absmax = 0.0f;
    for (std::size_t c = 0; c < group_size; ++c) {
      if (!std::isfinite(group[c])) return false;
      absmax = std::max(absmax, std::fabs(group[c]));
    }
    const ActivationScale s = activation_scale(absmax);
    std::int32_t sum = 0;
    for (std::size_t c = 0; c < group_size; ++c) {
      float q = 0.0f;
      if (absmax > 0.0f) q = std::nearbyint(s.finite ? group[c] * s.multiplier : group[c] / absmax * 127.0f);
      codes[g * group_size + c] = static_cast<std::int8_t>(q);
      sum += static_cast<std::int32_t>(q);
    }
    scales[g] = absmax / 127.0f;
    code_sums[g] = sum;
  }
  return true;
}

const QuantKernelTable& reference_quant_kernels() noexcept { return kQuantReferenceKernels; }

}  // namespace persona::detail
