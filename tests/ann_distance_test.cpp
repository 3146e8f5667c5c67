// Tests of ann's distance kernels: every SIMD level and thread count against the reference loops, over
// sizes that hit the vector tails, and the length check.
#include "test_support.hpp"

#include <persona/ann/distance.hpp>
#include <persona/core/error.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

using namespace persona;
using persona::test::for_each_level_and_threads;
using persona::test::kTailSizes;
using persona::test::kUnitRoundoff;
using persona::test::random_tensor;

TEST_CASE("squared_l2 matches the reference within the summation error bound", "[ann]") {
  for_each_level_and_threads([](IsaLevel, int) {
    for (std::size_t n : kTailSizes) {
      const Tensor<float> a = random_tensor({n}, 3), b = random_tensor({n}, 4);
      const double exact = squared_l2_ref(a.span(), b.span());
      // Each squared difference is rounded twice (difference, product) and the sum recursively.
      const double bound = (static_cast<double>(n) + 4) * kUnitRoundoff * exact;
      INFO("n = " << n);
      CHECK(std::fabs(squared_l2(a.span(), b.span()) - exact) <= bound);
    }
  });
  const std::vector<float> a{1.0f, 2.0f, 3.0f}, b{1.0f, 0.0f, -1.0f};
  CHECK(squared_l2(a, b) == 20.0f);
  std::vector<float> three(3), four(4);
  PERSONA_REQUIRE_ERROR(squared_l2(three, four), shape_mismatch, "3 elements but b has 4");
}

TEST_CASE("dot_i8 matches the reference within the summation error bound", "[ann]") {
  for_each_level_and_threads([](IsaLevel, int) {
    for (std::size_t n : kTailSizes) {
      const Tensor<float> a = random_tensor({n}, 3);
      std::vector<std::int8_t> b(n);
      for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::int8_t>(static_cast<int>((i * 37 + 11) % 256) - 128);
      double magnitude = 0.0;
      for (std::size_t i = 0; i < n; ++i) magnitude += std::fabs(static_cast<double>(a.data()[i]) * b[i]);
      const double bound = (static_cast<double>(n) + 4) * kUnitRoundoff * magnitude;
      INFO("n = " << n);
      CHECK(std::fabs(dot_i8(a.span(), b) - dot_i8_ref(a.span(), b)) <= bound);
    }
  });
  const std::vector<float> a{1.0f, 2.0f, 3.0f};
  const std::vector<std::int8_t> b{-128, 127, 1};
  CHECK(dot_i8(a, b) == 129.0f);
  std::vector<std::int8_t> four(4);
  PERSONA_REQUIRE_ERROR(dot_i8(a, four), shape_mismatch, "3 elements but b has 4");
}
