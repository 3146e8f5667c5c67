// The distance oracles, also the scalar level: plain loops accumulating in double (the oracle should be
// more accurate than what it checks). The inner product is core's oracle.
#include "ann/kernels/distance_kernel_table.hpp"
#include "core/kernels/core_kernel_table.hpp"

namespace persona::detail {
namespace {

float squared_l2_ref(const float* a, const float* b, std::size_t n) noexcept {
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    sum += d * d;
  }
  return static_cast<float>(sum);
}

float dot_i8_ref(const float* a, const std::int8_t* b, std::size_t n) noexcept {
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) sum += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(sum);
}

}  // namespace

constinit const DistanceKernelTable kDistanceReferenceKernels{dot_ref, squared_l2_ref, dot_i8_ref};

const DistanceKernelTable& reference_distance_kernels() noexcept { return kDistanceReferenceKernels; }

}  // namespace persona::detail
