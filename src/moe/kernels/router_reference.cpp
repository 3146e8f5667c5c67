// The scalar routing kernels: the oracle the SIMD ones are tested against, and the scalar level.
#include "moe/kernels/router_kernel_table.hpp"

#include <algorithm>
#include <cmath>

namespace persona::detail {
namespace {

bool all_finite_ref(const float* x, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return false;
  }
  return true;
}

void sigmoid_ref(const float* x, float* y, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    const double v =
        std::clamp(static_cast<double>(x[i]), -static_cast<double>(kSigmoidLimit), static_cast<double>(kSigmoidLimit));
    y[i] = static_cast<float>(1.0 / (1.0 + std::exp(-v)));
  }
}

std::size_t select_top_k_ref(const float* values, const std::uint8_t* allowed, std::size_t n, std::size_t k,
                             std::int32_t* ids, float* best) noexcept {
  std::size_t count = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (allowed == nullptr || allowed[i] != 0) {
      count = insert_candidate(values[i], static_cast<std::int32_t>(i), count, k, ids, best);
    }
  }
  return count;
}

}  // namespace

constinit const RouterKernelTable kRouterReferenceKernels{all_finite_ref, sigmoid_ref, select_top_k_ref};

const RouterKernelTable& reference_router_kernels() noexcept { return kRouterReferenceKernels; }

}  // namespace persona::detail
