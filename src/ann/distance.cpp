#include "persona/ann/distance.hpp"

#include "ann/kernels/distance_kernel_table.hpp"
#include "persona/core/error.hpp"

namespace persona {
namespace {

template <class B>
float distance_of(float (*kernel)(const float*, const B*, std::size_t) noexcept, std::span<const float> a,
                  std::span<const B> b, const char* function) {
  PERSONA_CHECK_AT(function, shape_mismatch, a.size() == b.size(), "a has {} elements but b has {}", a.size(),
                   b.size());
  return kernel(a.data(), b.data(), a.size());
}

const detail::DistanceKernelTable& fast() { return detail::distance_kernels(active_isa_level()); }
const detail::DistanceKernelTable& ref() { return detail::reference_distance_kernels(); }

}  // namespace

float squared_l2(std::span<const float> a, std::span<const float> b) {
  return distance_of(fast().squared_l2, a, b, "squared_l2");
}
float squared_l2_ref(std::span<const float> a, std::span<const float> b) {
  return distance_of(ref().squared_l2, a, b, "squared_l2_ref");
}
float dot_i8(std::span<const float> a, std::span<const std::int8_t> b) {
  return distance_of(fast().dot_i8, a, b, "dot_i8");
}
float dot_i8_ref(std::span<const float> a, std::span<const std::int8_t> b) {
  return distance_of(ref().dot_i8, a, b, "dot_i8_ref");
}

}  // namespace persona
