// Tests of the core component: errors, dtypes and 16-bit conversions, tensors and views, SIMD dispatch,
// threads, and every dense op against its scalar reference at every SIMD level and thread count.
#include "test_support.hpp"

#include <persona/core/dtype.hpp>
#include <persona/core/eigen.hpp>
#include <persona/core/error.hpp>
#include <persona/core/ops.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <limits>
#include <vector>

using namespace persona;
using persona::test::for_each_level_and_threads;
using persona::test::kTailSizes;
using persona::test::kUnitRoundoff;
using persona::test::random_tensor;

namespace {

bool same_bits(float a, float b) { return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b); }

bool bitwise_equal(const Tensor<float>& a, const Tensor<float>& b) {
  return a.shape() == b.shape() && (a.empty() || std::memcmp(a.data(), b.data(), a.numel() * sizeof(float)) == 0);
}

// Every |fast - ref| must be within bound(i); reports the first element that is not.
template <class Bound>
void require_close(const Tensor<float>& fast, const Tensor<float>& ref, Bound bound) {
  REQUIRE(fast.shape() == ref.shape());
  const auto f = fast.span(), r = ref.span();
  for (std::size_t i = 0; i < f.size(); ++i) {
    const float err = std::fabs(f[i] - r[i]);
    if (!(err <= bound(i))) {
      FAIL("element " << i << ": fast " << f[i] << " vs reference " << r[i] << " (error " << err << " > bound "
                      << bound(i) << ")");
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------- errors

TEST_CASE("Error carries its code, the function and the formatted message", "[core][error]") {
  auto fails = [](int value) { PERSONA_CHECK_CODE(out_of_range, value < 10, "value {} must be < {}", value, 10); };
  REQUIRE_NOTHROW(fails(3));
  try {
    fails(12);
    FAIL("no throw");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::out_of_range);
    CHECK(e.message() == "value 12 must be < 10");
    CHECK(std::string(e.what()).find("out_of_range") != std::string::npos);
    CHECK(std::string(e.what()).find("value 12 must be < 10") != std::string::npos);
  }
  auto default_code = [] { PERSONA_CHECK(false, "plain {}", "check"); };
  PERSONA_REQUIRE_ERROR(default_code(), invalid_argument, "plain check");
  // Error is a std::runtime_error so hosts can catch it generically.
  REQUIRE_THROWS_AS(fails(11), std::runtime_error);
  CHECK(to_string(ErrorCode::permission_denied) == "permission_denied");
}

// ---------------------------------------------------------------------------------------------- dtypes

TEST_CASE("DType sizes, names and parsing", "[core][dtype]") {
  CHECK(size_of(DType::f32) == 4);
  CHECK(size_of(DType::f16) == 2);
  CHECK(size_of(DType::bf16) == 2);
  CHECK(size_of(DType::i8) == 1);
  CHECK(size_of(DType::i32) == 4);
  CHECK(size_of(DType::u8) == 1);
  for (DType t : {DType::f32, DType::f16, DType::bf16, DType::i8, DType::i32, DType::u8}) {
    CHECK(parse_dtype(name_of(t)) == t);
  }
  PERSONA_REQUIRE_ERROR(parse_dtype("f64"), invalid_argument, "f64");
  STATIC_REQUIRE(dtype_of_v<bf16> == DType::bf16);
}

TEST_CASE("f16 scalar conversion: known values, rounding, overflow, subnormals", "[core][dtype]") {
  CHECK(f32_to_f16_bits(1.0f) == 0x3c00);
  CHECK(f32_to_f16_bits(-2.0f) == 0xc000);
  CHECK(f32_to_f16_bits(65504.0f) == 0x7bff);
  CHECK(f32_to_f16_bits(65519.996f) == 0x7bff);  // below the halfway point to 65536
  CHECK(f32_to_f16_bits(65520.0f) == 0x7c00);    // halfway, odd mantissa: rounds up to Inf
  CHECK(f32_to_f16_bits(std::numeric_limits<float>::infinity()) == 0x7c00);
  CHECK(f32_to_f16_bits(0x1p-24f) == 0x0001);           // smallest subnormal
  CHECK(f32_to_f16_bits(0x1p-25f) == 0x0000);           // halfway to zero: ties to even
  CHECK(f32_to_f16_bits(0x1.8p-24f) == 0x0002);         // 1.5 ulp: ties to even (2)
  CHECK(f32_to_f16_bits(1.0f + 0x1p-11f) == 0x3c00);    // halfway between 1 and next: even
  CHECK(f32_to_f16_bits(1.0f + 0x1.8p-10f) == 0x3c02);  // halfway, odd below: up
  CHECK(f16_bits_to_f32(0x0001) == 0x1p-24f);
  CHECK(std::isnan(f16_bits_to_f32(0x7e00)));
  CHECK(std::isnan(f16_bits_to_f32(f32_to_f16_bits(std::numeric_limits<float>::quiet_NaN()))));
}

TEST_CASE("f16 and bf16 round trips are exact on all 65536 bit patterns", "[core][dtype]") {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const auto bits = static_cast<std::uint16_t>(h);
    const float as_f16 = f16_bits_to_f32(bits), as_bf16 = bf16_bits_to_f32(bits);
    if (std::isnan(as_f16)) {
      REQUIRE(std::isnan(f16_bits_to_f32(f32_to_f16_bits(as_f16))));
    } else if (f32_to_f16_bits(as_f16) != bits) {
      FAIL("f16 pattern " << h << " does not round-trip");
    }
    if (std::isnan(as_bf16)) {
      REQUIRE(std::isnan(bf16_bits_to_f32(f32_to_bf16_bits(as_bf16))));
    } else if (f32_to_bf16_bits(as_bf16) != bits) {
      FAIL("bf16 pattern " << h << " does not round-trip");
    }
  }
}

TEST_CASE("bf16 scalar conversion rounds to nearest even and keeps NaN and Inf", "[core][dtype]") {
  CHECK(f32_to_bf16_bits(1.0f) == 0x3f80);
  CHECK(f32_to_bf16_bits(std::bit_cast<float>(0x3f808000u)) == 0x3f80);  // halfway, even below: down
  CHECK(f32_to_bf16_bits(std::bit_cast<float>(0x3f818000u)) == 0x3f82);  // halfway, odd below: up
  CHECK(f32_to_bf16_bits(std::bit_cast<float>(0x3f808001u)) == 0x3f81);  // above halfway: up
  CHECK(f32_to_bf16_bits(std::numeric_limits<float>::infinity()) == 0x7f80);
  CHECK(f32_to_bf16_bits(std::bit_cast<float>(0x7f800001u)) == 0x7fc0);  // NaN with low payload stays NaN
  CHECK(f32_to_bf16_bits(std::bit_cast<float>(0x7f7fffffu)) == 0x7f80);  // FLT_MAX rounds to Inf
}

TEST_CASE("Vectorized 16-bit conversions match the scalar ones bit for bit", "[core][dtype]") {
  // All 65536 patterns one way; the other way every widened pattern, every halfway point between two
  // neighbouring patterns, and random f32 bit patterns (NaN payloads, subnormals, overflow included).
  std::vector<std::uint16_t> all(65536);
  for (std::uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<std::uint16_t>(i);
  std::vector<float> inputs;
  for (std::uint32_t i = 0; i < 65536; ++i) {
    const float h = f16_bits_to_f32(static_cast<std::uint16_t>(i));
    const float b = bf16_bits_to_f32(static_cast<std::uint16_t>(i));
    inputs.insert(inputs.end(), {h, b, std::bit_cast<float>(std::bit_cast<std::uint32_t>(h) + 0x1000u),
                                 std::bit_cast<float>(std::bit_cast<std::uint32_t>(b) + 0x8000u)});
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 1 << 18; ++i) inputs.push_back(std::bit_cast<float>(static_cast<std::uint32_t>(rng())));
  inputs.push_back(1.0f);  // odd total length exercises the scalar tail

  for (IsaLevel level : supported_isa_levels()) {
    DYNAMIC_SECTION(to_string(level)) {
      ScopedIsaLevel isa(level);
      std::vector<float> widened(all.size());
      convert(std::span<const f16>(reinterpret_cast<const f16*>(all.data()), all.size()), std::span<float>(widened));
      for (std::size_t i = 0; i < all.size(); ++i) {
        if (!same_bits(widened[i], f16_bits_to_f32(all[i]))) FAIL("f16 -> f32 differs at pattern " << i);
      }
      convert(std::span<const bf16>(reinterpret_cast<const bf16*>(all.data()), all.size()), std::span<float>(widened));
      for (std::size_t i = 0; i < all.size(); ++i) {
        if (!same_bits(widened[i], bf16_bits_to_f32(all[i]))) FAIL("bf16 -> f32 differs at pattern " << i);
      }
      std::vector<f16> halves(inputs.size());
      std::vector<bf16> brains(inputs.size());
      convert(std::span<const float>(inputs), std::span<f16>(halves));
      convert(std::span<const float>(inputs), std::span<bf16>(brains));
      for (std::size_t i = 0; i < inputs.size(); ++i) {
        if (halves[i].bits != f32_to_f16_bits(inputs[i])) {
          FAIL("f32 -> f16 differs for bits " << std::bit_cast<std::uint32_t>(inputs[i]));
        }
        if (brains[i].bits != f32_to_bf16_bits(inputs[i])) {
          FAIL("f32 -> bf16 differs for bits " << std::bit_cast<std::uint32_t>(inputs[i]));
        }
      }
    }
  }
  std::vector<float> small(3);
  std::vector<f16> big(4);
  PERSONA_REQUIRE_ERROR(convert(std::span<const float>(small), std::span<f16>(big)), shape_mismatch, "3");
}

// --------------------------------------------------------------------------------------------- tensors

TEST_CASE("Tensor is zeroed, 64-byte aligned, row-major", "[core][tensor]") {
  Tensor<float> t({3, 5, 7});
  CHECK(t.rank() == 3);
  CHECK(t.numel() == 105);
  CHECK(reinterpret_cast<std::uintptr_t>(t.data()) % 64 == 0);
  CHECK(std::all_of(t.span().begin(), t.span().end(), [](float v) { return v == 0.0f; }));
  t(1, 2, 3) = 4.0f;
  CHECK(t.data()[1 * 35 + 2 * 7 + 3] == 4.0f);
  CHECK(t.view().strides() == Shape{35, 7, 1});
  Tensor<std::int8_t> bytes({1});  // 1 byte still gets an aligned block
  CHECK(reinterpret_cast<std::uintptr_t>(bytes.data()) % 64 == 0);
  Tensor<float> copy = t;
  CHECK(copy(1, 2, 3) == 4.0f);
  CHECK(copy.data() != t.data());
  const Tensor<float> default_tensor;
  CHECK(default_tensor.empty());
  CHECK(default_tensor.span().empty());
  CHECK(TensorView<float>().empty());
  Tensor<float> empty({0, 4});
  CHECK(empty.empty());
  CHECK(empty.view().rows(0, 0).empty());
  PERSONA_REQUIRE_ERROR(Tensor<float>({1, 2, 3, 4, 5}), invalid_argument, "rank 5");
}

TEST_CASE("Sizes that overflow, null data and out-of-buffer strides are Errors", "[core][tensor]") {
  const std::size_t huge = std::size_t{1} << 40;
  PERSONA_REQUIRE_ERROR(Tensor<float>({huge, huge}), out_of_range, "overflows");
  PERSONA_REQUIRE_ERROR(Tensor<float>({huge, std::size_t{1} << 23}), out_of_range, "overflows");
  PERSONA_REQUIRE_ERROR(TensorView<float>(nullptr, {2, 3}), invalid_argument, "null data");
  CHECK_NOTHROW(TensorView<float>(nullptr, {0, 3}));

  std::vector<float> buffer(12);
  CHECK_NOTHROW(TensorView<float>(buffer.data(), {3, 4}, {4, 1}, 12));
  CHECK_NOTHROW(TensorView<float>(buffer.data(), {2, 4}, {8, 1}, 12));  // rows 0 and 8..11
  PERSONA_REQUIRE_ERROR(TensorView<float>(buffer.data(), {3, 4}, {5, 1}, 12), out_of_range, "reaches element 13");
  PERSONA_REQUIRE_ERROR(TensorView<float>(buffer.data(), {3, 4}, {SIZE_MAX / 2 + 1, 1}, 12), out_of_range, "overflow");
  PERSONA_REQUIRE_ERROR(TensorView<float>(buffer.data(), {3, 4}, {4}, 12), shape_mismatch, "rank");
}

TEST_CASE("TensorView slicing and checked access", "[core][tensor]") {
  Tensor<float> t({4, 3});
  for (std::size_t i = 0; i < 12; ++i) t.data()[i] = static_cast<float>(i);
  TensorView<float> v = t;
  auto middle = v.rows(1, 3);
  CHECK(middle.shape() == Shape{2, 3});
  CHECK(middle(0, 0) == 3.0f);
  CHECK(middle.is_contiguous());
  auto row = v.row(2);
  CHECK(row.rank() == 1);
  CHECK(row(1) == 7.0f);
  CHECK(v.at(3, 2) == 11.0f);
  PERSONA_REQUIRE_ERROR(v.at(4, 0), out_of_range, "index 4 on dimension 0");
  PERSONA_REQUIRE_ERROR(v.at(1), shape_mismatch, "1 indices");
  PERSONA_REQUIRE_ERROR(v.rows(2, 5), out_of_range, "[2, 5)");
  PERSONA_REQUIRE_ERROR(v.row(4), out_of_range, "row 4");

  // A column view is strided: span() refuses it, as_eigen() maps it.
  TensorView<float> column(t.data() + 1, {4, 1}, {3, 1}, 11);
  PERSONA_REQUIRE_ERROR(TensorView<float>(t.data(), {4, 2}, {3, 1}, 12).span(), invalid_argument, "contiguous");
  CHECK(as_eigen(column)(3, 0) == 10.0f);
  TensorView<const float> as_const = v;
  CHECK(as_const(0, 1) == 1.0f);
  softmax(v, v);  // a mutable view passes as the op's const input
  CHECK(v(0, 2) > v(0, 1));
}

TEST_CASE("Eigen interop is zero-copy both ways", "[core][tensor]") {
  Tensor<float> t({2, 3});
  auto map = as_eigen(t.view());
  map(1, 2) = 5.0f;  // written through Eigen, seen by the tensor
  CHECK(t(1, 2) == 5.0f);
  CHECK(map.data() == t.data());

  Eigen::MatrixXf col_major = Eigen::MatrixXf::Zero(3, 2);  // column-major
  auto view = view_of(col_major);
  CHECK(view.shape() == Shape{3, 2});
  CHECK(view.strides() == Shape{1, 3});
  view(2, 1) = 9.0f;
  CHECK(col_major(2, 1) == 9.0f);
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> row_major(2, 4);
  row_major.setZero();
  auto block_view = view_of(row_major);
  CHECK(block_view.strides() == Shape{4, 1});
  PERSONA_REQUIRE_ERROR(as_eigen(TensorView<float>(t.data(), {6})), shape_mismatch, "rank 2");
}

// -------------------------------------------------------------------------------------- SIMD dispatch

TEST_CASE("CPU features and ISA levels", "[core][dispatch]") {
  const auto levels = supported_isa_levels();
  REQUIRE(!levels.empty());
  CHECK(levels.front() == IsaLevel::scalar);
  const CpuFeatures features = cpu_features();
  CHECK(levels.back() == features.best);
  if (features.best >= IsaLevel::avx2) CHECK((features.avx2 && features.fma && features.f16c));
  if (features.best >= IsaLevel::avx512) CHECK((features.avx512f && features.avx512bw && features.avx512vl));
  if (features.best == IsaLevel::avx512_vnni) CHECK(features.avx512_vnni);
  CHECK(features.to_string().find(std::string(to_string(features.active))) != std::string::npos);

  for (IsaLevel level : levels) {
    ScopedIsaLevel forced(level);
    CHECK(active_isa_level() == level);
    CHECK(cpu_features().active == level);
  }
  CHECK(parse_isa_level("avx2") == IsaLevel::avx2);
  PERSONA_REQUIRE_ERROR(parse_isa_level("neon"), invalid_argument,
                        "allowed values are scalar, avx2, avx512, avx512_vnni");
  if (features.best != IsaLevel::avx512_vnni) {
    PERSONA_REQUIRE_ERROR(set_isa_level(IsaLevel::avx512_vnni), unsupported, "support only");
  }
}

// -------------------------------------------------------------------------------------------- threads

TEST_CASE("Thread limits and parallel_for", "[core][threads]") {
  PERSONA_REQUIRE_ERROR(set_num_threads(-1), invalid_argument, "-1");
  PERSONA_REQUIRE_ERROR(ScopedNumThreads(0), invalid_argument, "0");
  const int before = num_threads();
  {
    ScopedNumThreads one(1);
    CHECK(num_threads() == 1);
    {
      ScopedNumThreads three(3);
      CHECK(num_threads() == 3);
    }
    CHECK(num_threads() == 1);
  }
  CHECK(num_threads() == before);

  {
    // A body that throws reaches the caller and leaves every thread's limit as it was.
    ScopedNumThreads two(2);
    auto throwing = [] {
      parallel_for(100, 1, [](std::size_t begin, std::size_t) { PERSONA_CHECK(begin != 50, "chunk {}", begin); });
    };
    PERSONA_REQUIRE_ERROR(throwing(), invalid_argument, "chunk 50");
    CHECK(num_threads() == 2);
  }

  for (int threads : {1, 2, 3}) {
    ScopedNumThreads limit(threads);
    for (std::size_t count : {0, 1, 7, 100, 1001}) {
      std::vector<std::atomic<int>> hits(count);
      std::vector<std::pair<std::size_t, std::size_t>> chunks(count / 10 + 1, {0, 0});
      parallel_for(count, 10, [&](std::size_t begin, std::size_t end) {
        chunks[begin / 10] = {begin, end};
        for (std::size_t i = begin; i < end; ++i) hits[i]++;
      });
      for (std::size_t i = 0; i < count; ++i) REQUIRE(hits[i] == 1);
      // The chunking is fixed by (count, grain), whatever the thread count.
      for (std::size_t c = 0; c * 10 < count; ++c) CHECK(chunks[c] == std::pair{c * 10, std::min(count, c * 10 + 10)});
    }
  }
}

TEST_CASE("parallel_for_slots never runs two chunks on one slot at once", "[core][threads]") {
  const std::size_t slots = thread_slot_count();
  REQUIRE(slots == static_cast<std::size_t>(hardware_threads()));
  for (int threads : {1, 2, 3}) {
    ScopedNumThreads limit(threads);
    std::vector<std::atomic<int>> busy(slots);
    std::atomic<int> clashes{0}, out_of_range{0}, chunks_run{0};
    parallel_for_slots(400, 1, [&](std::size_t slot, std::size_t, std::size_t) {
      if (slot >= slots) {
        ++out_of_range;
        return;
      }
      if (busy[slot].exchange(1) != 0) ++clashes;
      volatile double spin = 0.0;  // long enough for the chunks to overlap in time
      for (int i = 0; i < 2000; ++i) spin = spin + i;
      busy[slot].store(0);
      ++chunks_run;
    });
    CHECK(out_of_range == 0);
    CHECK(clashes == 0);
    CHECK(chunks_run == 400);
  }
}

// ----------------------------------------------------------------------------------------- dense ops

TEST_CASE("dot matches the reference within the summation error bound", "[core][ops]") {
  for_each_level_and_threads([](IsaLevel, int) {
    for (std::size_t n : kTailSizes) {
      const Tensor<float> a = random_tensor({n}, 1), b = random_tensor({n}, 2);
      double abs_sum = 0.0;
      for (std::size_t i = 0; i < n; ++i) abs_sum += std::fabs(static_cast<double>(a.data()[i]) * b.data()[i]);
      // Recursive summation in float: |error| <= n u sum|a_i b_i| (plus the final rounding of the reference).
      const double bound = (static_cast<double>(n) + 2) * kUnitRoundoff * abs_sum;
      INFO("n = " << n);
      CHECK(std::fabs(dot(a.span(), b.span()) - dot_ref(a.span(), b.span())) <= bound);
    }
  });
  std::vector<float> three(3), four(4);
  PERSONA_REQUIRE_ERROR(dot(three, four), shape_mismatch, "3 elements but b has 4");
}

TEST_CASE("Row ops match the reference at every level, size and thread count", "[core][ops]") {
  for_each_level_and_threads([](IsaLevel level, int threads) {
    for (std::size_t n : kTailSizes) {
      for (std::size_t rows : {std::size_t{0}, std::size_t{1}, std::size_t{33}}) {
        INFO("rows " << rows << ", n " << n);
        const Tensor<float> x = random_tensor({rows, n}, 3, 3.0f), up = random_tensor({rows, n}, 4);
        const Tensor<float> weight = random_tensor({n}, 5);
        Tensor<float> fast({rows, n}), ref({rows, n});
        const float nf = static_cast<float>(n);

        if (n > 0) {
          rmsnorm(x, weight.span(), 1e-6f, fast);
          rmsnorm_ref(x, weight.span(), 1e-6f, ref);
          // The float sum of squares is off by <= n u relative; sqrt, division and products add a few u.
          require_close(fast, ref, [&](std::size_t i) { return (nf + 8) * kUnitRoundoff * std::fabs(ref.data()[i]); });
        } else if (rows > 0) {
          PERSONA_REQUIRE_ERROR(rmsnorm(x, weight.span(), 1e-6f, fast), invalid_argument, "length 0");
        }

        softmax(x, fast);
        softmax_ref(x, ref);
        // The float sum of n exponentials (each within ~2 u from xsimd::exp) bounds the relative error.
        require_close(fast, ref, [&](std::size_t i) { return (nf + 8) * kUnitRoundoff * ref.data()[i] + 1e-30f; });
        if (rows > 0 && n > 0) {
          for (std::size_t r = 0; r < rows; ++r) {
            double sum = 0.0;
            for (std::size_t i = 0; i < n; ++i) sum += fast(r, i);
            REQUIRE(std::fabs(sum - 1.0) <= static_cast<double>(n + 8) * 1e-7);
          }
        }

        // silu and swiglu: one exp, one division and one product: within 8 u relative.
        silu(x, fast);
        silu_ref(x, ref);
        require_close(fast, ref, [&](std::size_t i) { return 8 * kUnitRoundoff * std::fabs(ref.data()[i]) + 1e-37f; });
        swiglu(x, up, fast);
        swiglu_ref(x, up, ref);
        require_close(fast, ref, [&](std::size_t i) { return 8 * kUnitRoundoff * std::fabs(ref.data()[i]) + 1e-37f; });

        // The scalar level runs the reference kernels themselves.
        if (level == IsaLevel::scalar) CHECK(bitwise_equal(fast, ref));
        // One thread and many give identical bits.
        if (threads > 1) {
          Tensor<float> single({rows, n});
          ScopedNumThreads one(1);
          swiglu(x, up, single);
          CHECK(bitwise_equal(fast, single));
          if (n > 0) {
            rmsnorm(x, weight.span(), 1e-6f, fast);
            rmsnorm(x, weight.span(), 1e-6f, single);
            ScopedNumThreads two(2);
            Tensor<float> multi({rows, n});
            rmsnorm(x, weight.span(), 1e-6f, multi);
            CHECK(bitwise_equal(single, multi));
          }
        }
      }
    }
  });
}

TEST_CASE("Row ops work in place, on strided rows, and reject bad shapes", "[core][ops]") {
  Tensor<float> x = random_tensor({5, 17}, 6);
  Tensor<float> out({5, 17}), in_place = x;
  softmax(x, out);
  softmax(in_place, in_place);
  CHECK(bitwise_equal(out, in_place));

  // Every other row of a [10, 17] buffer: row stride 34.
  Tensor<float> wide = random_tensor({10, 17}, 7);
  TensorView<const float> strided(wide.data(), {5, 17}, {34, 1}, wide.numel());
  Tensor<float> strided_out({5, 17}), expected({5, 17});
  silu(strided, strided_out);
  for (std::size_t r = 0; r < 5; ++r) silu_ref(wide.view().rows(2 * r, 2 * r + 1), expected.view().rows(r, r + 1));
  require_close(strided_out, expected,
                [&](std::size_t i) { return 8 * kUnitRoundoff * std::fabs(expected.data()[i]) + 1e-37f; });

  Tensor<float> wrong({5, 16});
  PERSONA_REQUIRE_ERROR(softmax(x, wrong), shape_mismatch, "x has shape [5, 17] but out has shape [5, 16]");
  PERSONA_REQUIRE_ERROR(swiglu(x, wrong, out), shape_mismatch, "[5, 16]");
  std::vector<float> weight(16);
  PERSONA_REQUIRE_ERROR(rmsnorm(x, weight, 1e-6f, out), shape_mismatch, "weight has 16 elements");
  std::vector<float> weight17(17);
  PERSONA_REQUIRE_ERROR(rmsnorm(x, weight17, -1.0f, out), invalid_argument, "eps");
  TensorView<float> shifted(x.data() + 1, {4, 17});  // overlaps x, but is not x
  PERSONA_REQUIRE_ERROR(softmax(x.view().rows(0, 4), shifted), invalid_argument, "overlaps");
  Tensor<float> cube({2, 2, 2});
  PERSONA_REQUIRE_ERROR(silu(cube, cube), shape_mismatch, "rank 1 or 2");
  TensorView<const float> column(x.data(), {5, 2}, {17, 3}, x.numel());
  Tensor<float> col_out({5, 2});
  PERSONA_REQUIRE_ERROR(silu(column, col_out), invalid_argument, "contiguous rows");
}

TEST_CASE("RoPE matches the reference and rotates as the Llama convention says", "[core][ops]") {
  for_each_level_and_threads([](IsaLevel, int) {
    for (std::size_t head_dim : {2, 8, 16, 18, 34, 64, 128, 1000}) {
      for (std::size_t tokens : {0, 1, 7, 17}) {
        INFO("tokens " << tokens << ", head_dim " << head_dim);
        const Tensor<float> x = random_tensor({tokens, 3, head_dim}, 8);
        Tensor<float> fast = x, ref = x;
        rope(fast, 5, RopeConfig{500000.0f});
        rope_ref(ref, 5, RopeConfig{500000.0f});
        // Same cos/sin tables; only FMA contraction may differ: within 4 u of the larger term.
        const std::size_t half = head_dim / 2;
        require_close(fast, ref, [&](std::size_t i) {
          const std::size_t d = i % head_dim, base = i - d;
          const float partner = x.data()[base + (d < half ? d + half : d - half)];
          return 4 * kUnitRoundoff * (std::fabs(x.data()[i]) + std::fabs(partner)) + 1e-37f;
        });
      }
    }
  });

  // Position p rotates the pair (x_i, x_{i+half}) by p * theta^(-2i/d); position 0 is the identity.
  Tensor<float> x({1, 1, 4});
  x(0, 0, 0) = 1.0f;  // pair (0, 2): frequency 1
  x(0, 0, 1) = 1.0f;  // pair (1, 3): frequency 100^-1 for theta 10000, d 4
  Tensor<float> at_zero = x;
  rope(at_zero, 0);
  CHECK(bitwise_equal(at_zero, x));
  rope(x, 3);
  CHECK(x(0, 0, 0) == Approx(std::cos(3.0)).margin(1e-6));
  CHECK(x(0, 0, 2) == Approx(std::sin(3.0)).margin(1e-6));
  CHECK(x(0, 0, 1) == Approx(std::cos(0.03)).margin(1e-6));
  CHECK(x(0, 0, 3) == Approx(std::sin(0.03)).margin(1e-6));

  // Explicit positions equal the offset form.
  Tensor<float> a = random_tensor({3, 2, 8}, 9), b = a;
  rope(a, 10);
  const std::vector<std::size_t> positions = {10, 11, 12};
  rope(b, positions);
  CHECK(bitwise_equal(a, b));

  Tensor<float> odd({1, 1, 7});
  PERSONA_REQUIRE_ERROR(rope(odd, 0), invalid_argument, "head_dim must be even");
  PERSONA_REQUIRE_ERROR(rope(a, std::span<const std::size_t>(positions).first(2)), shape_mismatch, "2 positions");
  PERSONA_REQUIRE_ERROR(rope(a, 0, RopeConfig{0.5f}), invalid_argument, "theta");
  Tensor<float> flat({3, 16});
  PERSONA_REQUIRE_ERROR(rope(flat, 0), shape_mismatch, "[tokens, heads, head_dim]");
}

TEST_CASE("RoPE scaling reproduces transformers' linear and llama3 frequencies", "[core][ops]") {
  // Recorded from transformers 5.25 ROPE_INIT_FUNCTIONS (head_dim 16), which computes in float32.
  RopeConfig llama3{500000.0f, RopeScaling::llama3, 8.0f, 1.0f, 4.0f, 16};
  const std::vector<double> expected_llama3{0.5760563611984253,    0.024240344762802124,   0.004700753837823868,
                                            0.0009115831344388425, 0.00017677668074611574, 3.428102354519069e-05,
                                            6.647869668086059e-06, 1.289173155782919e-06};
  RopeConfig linear{10000.0f, RopeScaling::linear, 2.0f};
  const std::vector<double> expected_linear{
      0.5,   0.15811388194561005,   0.05000000074505806,   0.015811389312148094,
      0.005, 0.0015811389312148094, 0.0005000000237487257, 0.00015811389312148094};
  for (const auto& [config, expected] : {std::pair{llama3, expected_llama3}, std::pair{linear, expected_linear}}) {
    const std::vector<double> got = rope_inverse_frequencies(config, 16);
    REQUIRE(got.size() == expected.size());
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(expected[i]).epsilon(1e-6));
  }
  // The rotation uses them: position 3 of a scaled rope equals the unscaled angle of the scaled frequency.
  Tensor<float> x({1, 1, 16}), y({1, 1, 16});
  x(0, 0, 0) = 1.0f;
  rope(x, 3, linear);
  CHECK(x(0, 0, 0) == Approx(std::cos(3 * 0.5)).margin(1e-6));
  CHECK(x(0, 0, 8) == Approx(std::sin(3 * 0.5)).margin(1e-6));
  y(0, 0, 0) = 1.0f;
  rope_ref(y, 3, linear);
  CHECK(bitwise_equal(x, y));

  PERSONA_REQUIRE_ERROR(rope_inverse_frequencies(RopeConfig{10000.0f, RopeScaling::linear, 0.5f}, 16), invalid_argument,
                        "factor");
  PERSONA_REQUIRE_ERROR(rope_inverse_frequencies(RopeConfig{10000.0f, RopeScaling::llama3, 8.0f, 4.0f, 1.0f}, 16),
                        invalid_argument, "low_freq_factor < high_freq_factor");
}

TEST_CASE("matmul matches the reference for both layouts, across tiles and thread counts", "[core][ops]") {
  struct Dims {
    std::size_t m, n, k;
  };
  const std::vector<Dims> cases = {{0, 5, 3},   {4, 0, 3},     {3, 4, 0},     {1, 1, 1},      {7, 8, 15},
                                   {16, 17, 1}, {1, 1000, 17}, {17, 257, 64}, {130, 300, 33}, {1, 513, 4097}};
  for_each_level_and_threads([&](IsaLevel, int threads) {
    for (const Dims& d : cases) {
      for (Transpose t : {Transpose::no, Transpose::yes}) {
        INFO("m " << d.m << " n " << d.n << " k " << d.k << (t == Transpose::yes ? " b^T" : ""));
        const Tensor<float> a = random_tensor({d.m, d.k}, 10);
        const Shape b_shape = t == Transpose::yes ? Shape{d.n, d.k} : Shape{d.k, d.n};
        const Tensor<float> b = random_tensor(b_shape, 11);
        Tensor<float> fast({d.m, d.n}), ref({d.m, d.n}), abs_ref({d.m, d.n});
        std::fill(fast.span().begin(), fast.span().end(), std::numeric_limits<float>::quiet_NaN());  // overwritten
        matmul(a, b, fast, t);
        matmul_ref(a, b, ref, t);
        // Bound: k u sum_l |a_il b_lj|, from the product of |a| and |b|.
        Tensor<float> abs_a = a, abs_b = b;
        for (float& v : abs_a.span()) v = std::fabs(v);
        for (float& v : abs_b.span()) v = std::fabs(v);
        matmul_ref(abs_a, abs_b, abs_ref, t);
        const float kf = static_cast<float>(d.k);
        require_close(fast, ref, [&](std::size_t i) { return (kf + 2) * kUnitRoundoff * abs_ref.data()[i]; });
        if (threads > 1) {
          Tensor<float> single({d.m, d.n});
          ScopedNumThreads one(1);
          matmul(a, b, single, t);
          CHECK(bitwise_equal(fast, single));
        }
      }
    }
  });

  const Tensor<float> a = random_tensor({3, 4}, 12), b = random_tensor({5, 4}, 13);
  Tensor<float> c({3, 5});
  PERSONA_REQUIRE_ERROR(matmul(a, b, c), shape_mismatch, "inner dimension (4 vs 5)");
  Tensor<float> c_wrong({3, 4});
  PERSONA_REQUIRE_ERROR(matmul(a, b, c_wrong, Transpose::yes), shape_mismatch, "c has shape [3, 4]");
  Tensor<float> square = random_tensor({4, 4}, 14);
  PERSONA_REQUIRE_ERROR(matmul(square, square, square), invalid_argument, "alias");
  Tensor<float> v({4});
  PERSONA_REQUIRE_ERROR(matmul(v, square, c), shape_mismatch, "a must have rank 2");
}
