// The bf16-weight product written once over xsimd batches, instantiated by each quant_<level>.cpp through
// make_quant_kernel_table<Arch>(). A bf16 weight is the top half of an f32: widening is a 16-bit shift of
// the zero-extended value. Rows of x go four at a time so that one widened weight vector feeds four FMAs;
// two vectors a step give each row two independent FMA chains. The oracle is product_bf16_ref.
#pragma once

#include "core/kernels/x86_io.hpp"
#include "persona/core/dtype.hpp"
#include "quant/kernels/quant_kernel_table.hpp"

#include <xsimd/xsimd.hpp>

namespace persona::detail {

template <class Arch>
struct Bf16Kernels {
  using F = xsimd::batch<float, Arch>;
  static constexpr std::size_t L = F::size;
  static constexpr std::size_t kRowGroup = 4;

  static F widen(const std::uint16_t* p) noexcept { return xsimd::bitwise_cast<F>(HalfIo<Arch>::load_u16(p) << 16); }

  // y[i, r] for G rows of x starting at `first` and one weight row w.
  template <std::size_t G>
  static void rows(const Bf16ProductArgs& a, const std::uint16_t* w, std::size_t first, std::size_t r) noexcept {
    F acc0[G], acc1[G];
    const float* x[G];
    for (std::size_t g = 0; g < G; ++g) {
      acc0[g] = acc1[g] = F(0.0f);
      x[g] = a.x + (first + g) * a.ldx;
    }
    std::size_t j = 0;
    for (; j + 2 * L <= a.k; j += 2 * L) {
      const F w0 = widen(w + j), w1 = widen(w + j + L);
      for (std::size_t g = 0; g < G; ++g) {
        acc0[g] = fused_multiply_add<Arch>(F::load_unaligned(x[g] + j), w0, acc0[g]);
        acc1[g] = fused_multiply_add<Arch>(F::load_unaligned(x[g] + j + L), w1, acc1[g]);
      }
    }
    for (; j + L <= a.k; j += L) {
      const F w0 = widen(w + j);
      for (std::size_t g = 0; g < G; ++g) acc0[g] = fused_multiply_add<Arch>(F::load_unaligned(x[g] + j), w0, acc0[g]);
    }
    for (std::size_t g = 0; g < G; ++g) {
      float sum = xsimd::hadd(acc0[g] + acc1[g]);
      for (std::size_t t = j; t < a.k; ++t) sum += x[g][t] * bf16_bits_to_f32(w[t]);
      a.y[(first + g) * a.ldy + r] = sum;
    }
  }

  static void product(const Bf16ProductArgs& a) noexcept {
    for (std::size_t r = a.row_begin; r < a.row_end; ++r) {
      const std::uint16_t* w = a.w + r * a.k;
      std::size_t i = 0;
      for (; i + kRowGroup <= a.m; i += kRowGroup) rows<kRowGroup>(a, w, i, r);
      switch (a.m - i) {
        case 3: rows<3>(a, w, i, r); break;
        case 2: rows<2>(a, w, i, r); break;
        case 1: rows<1>(a, w, i, r); break;
        default: break;
      }
    }
  }
};

}  // namespace persona::detail
