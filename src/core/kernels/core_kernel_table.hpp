// The table of core kernels one SIMD level provides. Kernels take validated raw pointers and sizes and
// are noexcept; the public ops in src/core/ops.cpp validate, split work across threads and call these.
// The generic kernels are in core_kernels.hpp, the oracles in core_reference.cpp (this folder).
#pragma once

#include "persona/core/cpu_features.hpp"

#include <cstddef>
#include <cstdint>

namespace persona::detail {

struct MatmulArgs {
  const float* a;  // [m, k], row stride lda
  const float* b;  // [k, n] (row stride ldb), or [n, k] when b_transposed
  float* c;        // [m, n], row stride ldc; overwritten
  std::size_t m, n, k;
  std::size_t lda, ldb, ldc;
  bool b_transposed;
};

struct CoreKernelTable {
  IsaLevel level;  // the level the kernels are built for (the avx512 table also serves avx512_vnni)
  float (*dot)(const float* a, const float* b, std::size_t n) noexcept;
  // y[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i], i < n; y may equal x.
  void (*rmsnorm)(const float* x, const float* weight, float eps, float* y, std::size_t n) noexcept;
  // y = softmax(x) over n elements; y may equal x.
  void (*softmax)(const float* x, float* y, std::size_t n) noexcept;
  void (*silu)(const float* x, float* y, std::size_t n) noexcept;
  // y = silu(gate) * up
  void (*swiglu)(const float* gate, const float* up, float* y, std::size_t n) noexcept;
  // One head in rotate-half layout: (x[i], x[i + half]) rotated by the angle with cos[i], sin[i].
  void (*rope)(float* x, const float* cos, const float* sin, std::size_t half) noexcept;
  void (*f32_to_f16)(const float* in, std::uint16_t* out, std::size_t n) noexcept;
  void (*f16_to_f32)(const std::uint16_t* in, float* out, std::size_t n) noexcept;
  void (*f32_to_bf16)(const float* in, std::uint16_t* out, std::size_t n) noexcept;
  void (*bf16_to_f32)(const std::uint16_t* in, float* out, std::size_t n) noexcept;
  void (*matmul)(const MatmulArgs& args) noexcept;
};

// The dot oracle (in double), also the inner product of ann's reference distance table.
float dot_ref(const float* a, const float* b, std::size_t n) noexcept;

// The plain scalar oracles (matmul is a triple loop); what the *_ref public functions run.
const CoreKernelTable& reference_core_kernels() noexcept;
// The kernels of one level; the level must be in supported_isa_levels().
const CoreKernelTable& core_kernels(IsaLevel level) noexcept;
// The kernels of active_isa_level().
const CoreKernelTable& core_kernels();

// The table of each level, for core_dispatch.cpp: the scalar level (the oracles with Eigen's matmul,
// core_reference.cpp) and one per core_<level>.cpp, of which only the levels this build compiles exist.
// No VNNI table: the avx512_vnni level runs the avx512 one.
extern const CoreKernelTable kCoreScalarKernels;
extern const CoreKernelTable kCoreAvx2Kernels;
extern const CoreKernelTable kCoreAvx512Kernels;

}  // namespace persona::detail
