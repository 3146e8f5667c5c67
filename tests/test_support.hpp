// Helpers shared by the component tests: seeded random data, and the loops over every SIMD level this
// CPU runs and over thread counts.
#pragma once

#include <persona/core/cpu_features.hpp>
#include <persona/core/tensor.hpp>
#include <persona/core/threading.hpp>

#include <fmt/format.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <filesystem>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace persona::test {

// u = 2^-24 for float32 round to nearest: the unit of the kernels' error bounds.
inline constexpr float kUnitRoundoff = 0x1p-24f;
// Vector lengths that hit every SIMD tail (empty, below one lane, one lane +- 1, long and odd).
inline const std::vector<std::size_t> kTailSizes = {0, 1, 7, 8, 15, 16, 17, 1000, 4097};

inline Tensor<float> random_tensor(Shape shape, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  Tensor<float> t(shape);
  for (float& v : t.span()) v = normal(rng);
  return t;
}

// Token ids first, first + 1, ..., n of them.
inline std::vector<std::int32_t> iota_tokens(std::size_t n, std::int32_t first) {
  std::vector<std::int32_t> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = first + static_cast<std::int32_t>(i);
  return t;
}

// Runs `body` once per supported SIMD level and thread count, each in its own Catch section.
template <class Body>
void for_each_level_and_threads(Body&& body) {
  for (IsaLevel level : supported_isa_levels()) {
    for (int threads : {1, 2}) {
      DYNAMIC_SECTION(to_string(level) << ", " << threads << " thread(s)") {
        ScopedIsaLevel isa(level);
        ScopedNumThreads limit(threads);
        body(level, threads);
      }
    }
  }
}

// Error thrown by `expr` has `code` and its what() contains `needle`.
#define PERSONA_REQUIRE_ERROR(expr, error_code, needle)                     \
  do {                                                                      \
    try {                                                                   \
      (void)(expr);                                                         \
      FAIL("expected persona::Error(" #error_code ") from " #expr);         \
    } catch (const ::persona::Error& e) {                                   \
      CHECK(e.code() == ::persona::ErrorCode::error_code);                  \
      CHECK_THAT(std::string(e.what()), Catch::Matchers::Contains(needle)); \
    }                                                                       \
  } while (false)

// A fresh folder under the temporary directory, named after `what`, the process and a counter; removed
// with everything in it at the end of the scope.
struct TempFolder {
  explicit TempFolder(std::string_view what = "test")
      : path(std::filesystem::temp_directory_path() / fmt::format("persona_{}_{}_{}", what, ::getpid(), counter()++)) {
    std::filesystem::create_directories(path);
  }
  ~TempFolder() { std::filesystem::remove_all(path); }
  TempFolder(const TempFolder&) = delete;
  TempFolder& operator=(const TempFolder&) = delete;
  std::filesystem::path path;

 private:
  static int& counter() {
    static int n = 0;
    return n;
  }
};

}  // namespace persona::test
