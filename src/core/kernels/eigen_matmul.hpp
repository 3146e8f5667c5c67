// Eigen's GEMM, compiled into each of core's level files (core_<level>.cpp, and core_reference.cpp for the
// scalar level) with that file's flags. Each copy lives in its own namespace (PERSONA_ARCH_EIGEN renames
// `Eigen`): otherwise the linker would merge the identically named template instances of different files
// and could hand the AVX-512 body to the AVX2 path.
#pragma once

#ifndef PERSONA_ARCH_EIGEN
#error "define PERSONA_ARCH_EIGEN to a namespace unique to this architecture file"
#endif
#define Eigen PERSONA_ARCH_EIGEN
#include <Eigen/Core>

#include "core/kernels/core_kernel_table.hpp"

namespace persona::detail {
namespace {

void eigen_matmul(const MatmulArgs& p) noexcept {
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using ColMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
  using Stride = Eigen::OuterStride<>;
  const auto m = static_cast<Eigen::Index>(p.m), n = static_cast<Eigen::Index>(p.n), k = static_cast<Eigen::Index>(p.k);
  Eigen::Map<const RowMajor, 0, Stride> a(p.a, m, k, Stride(static_cast<Eigen::Index>(p.lda)));
  Eigen::Map<RowMajor, 0, Stride> c(p.c, m, n, Stride(static_cast<Eigen::Index>(p.ldc)));
  if (p.b_transposed) {
    // b is [n, k] row-major, which is b^T [k, n] column-major: no copy.
    Eigen::Map<const ColMajor, 0, Stride> bt(p.b, k, n, Stride(static_cast<Eigen::Index>(p.ldb)));
    c.noalias() = a * bt;
  } else {
    Eigen::Map<const RowMajor, 0, Stride> b(p.b, k, n, Stride(static_cast<Eigen::Index>(p.ldb)));
    c.noalias() = a * b;
  }
}

}  // namespace
}  // namespace persona::detail
