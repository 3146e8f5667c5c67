// bf16 weights: Bf16Matrix (a copy, or a view of someone else's bytes) and bf16_matmul at every SIMD
// level and thread count against the double-accumulating oracle, on shapes that hit every tail.
#include "test_support.hpp"

#include <persona/core/dtype.hpp>
#include <persona/core/error.hpp>
#include <persona/quant/bf16_matrix.hpp>
#include <persona/quant/weight_matrix.hpp>

#include <bit>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

using namespace persona;
using persona::test::for_each_level_and_threads;
using persona::test::random_tensor;

namespace {

float max_relative_difference(const Tensor<float>& a, const Tensor<float>& b) {
  float worst = 0.0f, scale = 0.0f;
  for (std::size_t i = 0; i < a.numel(); ++i) {
    worst = std::max(worst, std::fabs(a.data()[i] - b.data()[i]));
    scale = std::max(scale, std::fabs(b.data()[i]));
  }
  return worst / std::max(scale, 1e-30f);
}

}  // namespace

TEST_CASE("bf16_matmul equals the oracle at every level, thread count and tail", "[quant][bf16]") {
  std::uint32_t seed = 1;
  for (const std::size_t k : {1u, 7u, 16u, 33u, 100u, 257u}) {
    for (const std::size_t n : {1u, 63u, 65u, 130u}) {
      const Bf16Matrix w = Bf16Matrix::from_f32(random_tensor({n, k}, ++seed));
      for (const std::size_t m : {1u, 2u, 3u, 4u, 5u, 8u, 9u, 17u, 40u}) {
        DYNAMIC_SECTION("m " << m << " n " << n << " k " << k) {
          const Tensor<float> x = random_tensor({m, k}, ++seed);
          Tensor<float> expected({m, n});
          bf16_matmul_ref(x, w, expected);
          // The oracle is the f32 product of the widened weights.
          Tensor<float> widened({m, n});
          const Tensor<float> wf = w.to_f32();
          for (std::size_t i = 0; i < m; ++i) {
            for (std::size_t r = 0; r < n; ++r) {
              double s = 0;
              for (std::size_t j = 0; j < k; ++j) s += static_cast<double>(x(i, j)) * wf(r, j);
              widened(i, r) = static_cast<float>(s);
            }
          }
          CHECK(max_relative_difference(expected, widened) == 0.0f);
          for_each_level_and_threads([&](IsaLevel, int) {
            Tensor<float> y({m, n});
            bf16_matmul(x, w, y);
            CHECK(max_relative_difference(y, expected) < 2e-6f * std::sqrt(static_cast<float>(k)));
          });
        }
      }
    }
  }
}

TEST_CASE("The widening kernel gives each row of x the same result whatever the batch", "[quant][bf16]") {
  const Bf16Matrix w = Bf16Matrix::from_f32(random_tensor({70, 300}, 3));
  const Tensor<float> x = random_tensor({kBf16DirectRows, 300}, 4);
  Tensor<float> batch({kBf16DirectRows, 70});
  bf16_matmul(x, w, batch);
  for (std::size_t i = 0; i < kBf16DirectRows; ++i) {
    Tensor<float> one({1, 70});
    bf16_matmul(TensorView<const float>(x.data() + i * 300, {1, 300}), w, one);
    CHECK(std::memcmp(one.data(), batch.data() + i * 70, 70 * sizeof(float)) == 0);
  }
}

TEST_CASE("Bf16Matrix rounds to nearest even, views aligned bytes in place and copies unaligned ones",
          "[quant][bf16]") {
  Tensor<float> w({1, 3});
  w(0, 0) = 1.0f;
  w(0, 1) = std::bit_cast<float>(0x3f808000u);  // halfway between two bf16 values: ties to the even one
  w(0, 2) = -2.5f;
  const Bf16Matrix m = Bf16Matrix::from_f32(w);
  CHECK(m.data()[0] == 0x3f80);
  CHECK(m.data()[1] == 0x3f80);
  CHECK(m.to_f32()(0, 2) == -2.5f);
  CHECK(!m.in_place());
  const Bf16Matrix copy = m;  // a copy owns its values
  CHECK(copy.data() != m.data());
  CHECK(copy.data()[2] == m.data()[2]);

  auto bytes = std::make_shared<std::vector<std::uint16_t>>(std::vector<std::uint16_t>{0x3f80, 0x4000, 0xc020, 0});
  const std::span<const std::byte> all = std::as_bytes(std::span(*bytes));
  const Bf16Matrix view(all.first(8), 2, 2, bytes);
  CHECK(view.in_place());
  CHECK(view.data() == bytes->data());
  CHECK(view.owned_bytes() == 0);
  CHECK(view.to_f32()(1, 0) == -2.5f);
  std::vector<std::byte> shifted(9);
  std::memcpy(shifted.data() + 1, bytes->data(), 8);
  const Bf16Matrix unaligned(std::span<const std::byte>(shifted).subspan(1, 8), 2, 2, nullptr);
  CHECK(!unaligned.in_place());
  CHECK(unaligned.to_f32()(0, 1) == 2.0f);
  PERSONA_REQUIRE_ERROR(Bf16Matrix(all, 3, 3, bytes), shape_mismatch, "8 bytes of bf16 data for a [3, 3] matrix");

  const WeightMatrix weight(view);
  CHECK(weight.format() == "bf16");
  CHECK(weight.rows() == 2);
  CHECK(weight.bytes() == 8);
  Tensor<float> x({1, 2}), y({1, 2});
  x(0, 0) = 1.0f;
  x(0, 1) = 2.0f;
  weight.multiply(x, y);
  CHECK(y(0, 0) == 1.0f + 2.0f * 2.0f);
  CHECK(y(0, 1) == -2.5f);
  Tensor<float> bad({1, 3});
  PERSONA_REQUIRE_ERROR(bf16_matmul(bad, view, y), shape_mismatch, "do not fit a [2, 2] weight");
}
