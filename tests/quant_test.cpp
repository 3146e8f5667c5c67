// Tests of the quant component: formats, quantize / dequantize error bounds derived from each format, the
// NF4 code book, and both quantized products against their scalar oracles at every SIMD level and
// thread count (bit for bit) and against dequantize-then-matmul (within a stated tolerance).
#include "test_support.hpp"

#include <persona/core/ops.hpp>
#include <persona/quant/quantize.hpp>
#include <persona/quant/quantized_matmul.hpp>

#include <bit>
#include <cmath>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

using namespace persona;
using persona::test::for_each_level_and_threads;
using persona::test::random_tensor;

namespace {

// Every spec the format offers.
std::vector<QuantSpec> all_specs() {
  std::vector<QuantSpec> specs;
  for (int bits : {8, 4, 2}) {
    for (std::size_t group : {32, 64, 128}) {
      for (bool symmetric : {true, false}) specs.push_back({bits, group, symmetric, DType::f16, QuantCodebook::linear});
    }
  }
  for (std::size_t group : {32, 64, 128}) specs.push_back(QuantSpec::nf4(group));
  // The short groups (LoRA B): 8 for 8- and 4-bit codes, 16 for every width.
  for (int bits : {8, 4}) specs.push_back({bits, 8, bits == 4, DType::f16, QuantCodebook::linear});
  for (int bits : {8, 4, 2}) specs.push_back({bits, 16, bits != 4, DType::f16, QuantCodebook::linear});
  specs.push_back(QuantSpec::nf4(16));
  specs.push_back({4, 32, false, DType::bf16, QuantCodebook::linear});
  specs.push_back({8, 64, true, DType::f32, QuantCodebook::linear});
  specs.push_back({2, 128, false, DType::f32, QuantCodebook::linear});
  return specs;
}

// Student-t-like heavy tails: a normal divided by the root of a scaled chi-square with 3 degrees of freedom.
Tensor<float> heavy_tailed(Shape shape, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Tensor<float> t(shape);
  for (float& v : t.span()) {
    const float a = normal(rng), b = normal(rng), c = normal(rng);
    v = normal(rng) / std::sqrt((a * a + b * b + c * c) / 3.0f + 1e-3f);
  }
  return t;
}

bool same_bits(const Tensor<float>& a, const Tensor<float>& b) {
  return a.shape() == b.shape() && (a.empty() || std::memcmp(a.data(), b.data(), a.numel() * sizeof(float)) == 0);
}

// The int8-path product at every SIMD level equals the oracle bit for bit; returns the oracle's result.
Tensor<float> require_every_level_matches_oracle(const Tensor<float>& x, const QuantizedMatrix& q) {
  Tensor<float> ref({x.dim(0), q.rows()});
  quantized_matmul_ref(x, q, ref);
  for (IsaLevel level : supported_isa_levels()) {
    ScopedIsaLevel isa(level);
    Tensor<float> y({x.dim(0), q.rows()});
    quantized_matmul(x, q, y);
    CHECK(same_bits(y, ref));
  }
  return ref;
}

}  // namespace

TEST_CASE("QuantSpec validation, names and bits per weight", "[quant]") {
  CHECK(QuantSpec{}.to_string() == "int4 g32 sym f16");
  CHECK(QuantSpec::nf4().to_string() == "nf4 g64 f16");
  CHECK(QuantSpec{4, 32, true}.bits_per_weight() == 4.5);  // 4 + 16 / 32, as ggml's q4_0
  CHECK(QuantSpec{4, 32, false}.bits_per_weight() == 5.0);
  CHECK(QuantSpec{8, 128, true, DType::f32}.bits_per_weight() == 8.25);
  CHECK(QuantSpec{2, 64, false}.bits_per_weight() == 2.5);
  PERSONA_REQUIRE_ERROR((QuantSpec{3, 32}.validate()), invalid_argument, "bits is 3; allowed values are 8, 4, 2");
  PERSONA_REQUIRE_ERROR((QuantSpec{4, 48}.validate()), invalid_argument, "group_size is 48");
  PERSONA_REQUIRE_ERROR((QuantSpec{2, 8}.validate()), invalid_argument, "2-bit codes come in tiles of 16 columns");
  CHECK(QuantSpec{4, 16, true}.bits_per_weight() == 5.0);
  CHECK(QuantSpec{4, 8, true}.bits_per_weight() == 6.0);
  PERSONA_REQUIRE_ERROR((QuantSpec{4, 32, true, DType::i8}.validate()), invalid_argument, "scale_type is i8");
  PERSONA_REQUIRE_ERROR((QuantSpec{8, 32, true, DType::f16, QuantCodebook::nf4}.validate()), invalid_argument,
                        "NF4 code book needs bits = 4");
  PERSONA_REQUIRE_ERROR((QuantSpec{4, 32, false, DType::f16, QuantCodebook::nf4}.validate()), invalid_argument,
                        "symmetric");
  STATIC_REQUIRE(tile_traits(4).columns_per_tile == 8);
  STATIC_REQUIRE(tile_traits(2).elements_per_tile == 256);
}

TEST_CASE("NF4 code book equals the published QLoRA table", "[quant]") {
  // bitsandbytes' create_normal_map(): the 16 values printed in the QLoRA paper, appendix E.
  const float published[16] = {-1.0f,
                               -0.6961928009986877f,
                               -0.5250730514526367f,
                               -0.39491748809814453f,
                               -0.28444138169288635f,
                               -0.18477343022823334f,
                               -0.09105003625154495f,
                               0.0f,
                               0.07958029955625534f,
                               0.16093020141124725f,
                               0.24611230194568634f,
                               0.33791524171829224f,
                               0.44070982933044434f,
                               0.5626170039176941f,
                               0.7229568362236023f,
                               1.0f};
  for (int i = 0; i < 16; ++i) CHECK(kNf4Codebook[i] == published[i]);
  // Each value is the code book's own: quantizing scale * value gives back that code exactly.
  Tensor<float> w({1, 64});
  for (std::size_t c = 0; c < 64; ++c) w(0, c) = 0.5f * kNf4Codebook[c % 16];
  const QuantizedMatrix q = quantize(w, QuantSpec::nf4(64));
  for (std::size_t c = 0; c < 64; ++c) CHECK(q.code(0, c) == c % 16);
  CHECK(error_report(w, q).max_abs_error == 0.0);
}

TEST_CASE("Codes and parameters land where docs/formats.md says", "[quant]") {
  QuantizedMatrix q(17, 64, QuantSpec{4, 32, false});
  CHECK(q.panels() == 2);
  CHECK(q.tiles_per_panel() == 8);
  CHECK(q.codes().size() == 2 * 8 * 64);
  q.set_code(16, 13, 0xb);  // row 16: panel 1, row 0 in it; column 13: tile 1, field 1, byte 1
  CHECK(q.codes()[(1 * 8 + 1) * 64 + 0 * 4 + 1] == 0xb0);
  CHECK(q.code(16, 13) == 0xb);
  CHECK(q.code(16, 9) == 0);
  q.set_scale(16, 1, 0.5f);
  q.set_minimum(16, 1, -2.0f);
  CHECK(q.scale(16, 1) == 0.5f);
  CHECK(q.minimum(16, 1) == -2.0f);
  std::uint16_t bits = 0;  // [panels, groups, 16] f16: panel 1, group 1, row 0 -> index 48
  std::memcpy(&bits, q.scales().data() + 2 * 48, 2);
  CHECK(bits == 0x3800);
  CHECK(reinterpret_cast<std::uintptr_t>(q.scales().data()) % 64 == 0);
  CHECK(reinterpret_cast<std::uintptr_t>(q.minima().data()) % 64 == 0);
  PERSONA_REQUIRE_ERROR(QuantizedMatrix(4, 100, QuantSpec{4, 64}), shape_mismatch,
                        "cols = 100 is not a multiple of the group size 64");
}

TEST_CASE("QuantizedMatrix sizes are overflow-checked, plane_sizes gives them without allocating", "[quant]") {
  for (const QuantSpec& spec : {QuantSpec{4, 32, false}, QuantSpec{8, 64, true, DType::f32}, QuantSpec::nf4(32),
                                QuantSpec{2, 128, false, DType::bf16}}) {
    INFO(spec.to_string());
    for (const std::size_t rows : {std::size_t{1}, std::size_t{17}, std::size_t{64}}) {
      const QuantizedMatrix q(rows, 256, spec);
      const QuantizedPlaneSizes sizes = QuantizedMatrix::plane_sizes(rows, 256, spec);
      CHECK(sizes.codes == q.codes().size());
      CHECK(sizes.scales == q.scales().size());
      CHECK(sizes.minima == q.minima().size());
      CHECK(sizes.codes + sizes.scales + sizes.minima == q.bytes());
    }
  }
  // Rank 2^63 once wrapped both planes to 0 bytes; rows near 2^64 wrapped the panel count.
  for (const std::size_t rows : {std::size_t{1} << 63, ~std::size_t{0}, ~std::size_t{0} - 14}) {
    PERSONA_REQUIRE_ERROR(QuantizedMatrix::plane_sizes(rows, 64, QuantSpec{4, 32}), out_of_range,
                          "needs more bytes than size_t holds");
    PERSONA_REQUIRE_ERROR(QuantizedMatrix(rows, 64, QuantSpec{4, 32}), out_of_range,
                          "needs more bytes than size_t holds");
  }
  PERSONA_REQUIRE_ERROR(QuantizedMatrix::plane_sizes(16, std::size_t{1} << 62, QuantSpec{8, 64}), out_of_range,
                        "needs more bytes than size_t holds");
}

TEST_CASE("A QuantizedMatrix view uses its planes in place, and writing copies it first", "[quant]") {
  const Tensor<float> w = test::random_tensor({37, 128}, 41);
  const Tensor<float> x = test::random_tensor({5, 128}, 42);
  for (const QuantSpec& spec : {QuantSpec{4, 32}, QuantSpec{8, 32, false}}) {
    INFO(spec.to_string());
    const QuantizedMatrix owned = quantize(w, spec);
    // The planes somewhere else, as a mapped file holds them.
    auto bytes = std::make_shared<Tensor<std::uint8_t>>(Shape{owned.bytes() + 64});
    std::uint8_t* at = bytes->data();
    std::copy(owned.codes().begin(), owned.codes().end(), at);
    std::copy(owned.scales().begin(), owned.scales().end(), at + owned.codes().size());
    std::copy(owned.minima().begin(), owned.minima().end(), at + owned.codes().size() + owned.scales().size());
    const std::span<const std::uint8_t> codes(at, owned.codes().size());
    const std::span<const std::uint8_t> scales(at + codes.size(), owned.scales().size());
    const std::span<const std::uint8_t> minima(at + codes.size() + scales.size(), owned.minima().size());
    QuantizedMatrix view = QuantizedMatrix::view(37, 128, spec, codes, scales, minima, bytes);
    CHECK(view.in_place());
    CHECK(!owned.in_place());
    CHECK(std::as_const(view).codes().data() == at);
    CHECK(view.bytes() == owned.bytes());
    Tensor<float> y_owned({5, 37}), y_view({5, 37});
    quantized_matmul(x, owned, y_owned);
    quantized_matmul(x, view, y_view);
    CHECK(std::memcmp(y_owned.data(), y_view.data(), y_owned.numel() * sizeof(float)) == 0);
    // A copy shares the planes; a write detaches only the written matrix and leaves the bytes alone.
    QuantizedMatrix copy = view;
    CHECK(std::as_const(copy).codes().data() == at);
    const std::uint8_t before = at[0];
    copy.set_code(0, 0, static_cast<std::uint8_t>(copy.code(0, 0) ^ 1));
    CHECK(!copy.in_place());
    CHECK(at[0] == before);
    CHECK(view.in_place());
    CHECK(copy.code(0, 0) != view.code(0, 0));
    CHECK(copy.code(36, 127) == view.code(36, 127));
    CHECK(copy.scale(36, 3) == view.scale(36, 3));
    // Wrong sizes, misaligned planes and a missing owner are refused.
    PERSONA_REQUIRE_ERROR(QuantizedMatrix::view(60, 128, spec, codes, scales, minima, bytes), shape_mismatch,
                          "has planes of");
    if (scales.size() > 64) {
      PERSONA_REQUIRE_ERROR(
          QuantizedMatrix::view(37, 128, spec, codes, std::span(scales.data() + 1, scales.size()), minima, bytes),
          invalid_argument, "not 64-byte aligned");
    }
    PERSONA_REQUIRE_ERROR(QuantizedMatrix::view(37, 128, spec, codes, scales, minima, nullptr), invalid_argument,
                          "needs an owner");
  }
}

TEST_CASE("Round trips stay within the error bound of each format", "[quant]") {
  const Tensor<float> gaussian = random_tensor({33, 256}, 21);
  const Tensor<float> heavy = heavy_tailed({33, 256}, 22);
  for (const QuantSpec& spec : all_specs()) {
    for (const Tensor<float>* w : {&gaussian, &heavy}) {
      for (QuantMethod method : {QuantMethod::round_to_nearest, QuantMethod::search}) {
        INFO(spec.to_string() << (w == &heavy ? " heavy-tailed" : " gaussian")
                              << (method == QuantMethod::search ? " search" : " rtn"));
        const QuantizedMatrix q = quantize(*w, spec, method);
        const Tensor<float> back = dequantize(q);
        const std::size_t g = spec.group_size;
        const std::size_t levels = (std::size_t{1} << spec.bits) - 1;
        for (std::size_t r = 0; r < w->dim(0); ++r) {
          for (std::size_t group = 0; group < w->dim(1) / g; ++group) {
            float lo = (*w)(r, group * g), hi = lo;
            for (std::size_t c = group * g; c < (group + 1) * g; ++c) {
              lo = std::min(lo, (*w)(r, c));
              hi = std::max(hi, (*w)(r, c));
            }
            const float absmax = std::max(std::fabs(lo), std::fabs(hi));
            // Bound on |w - dequant(w)| for round to nearest: half a step of the grid, where the step is
            // range / levels (asymmetric), absmax / (2^(b-1) - 1) (symmetric), or for NF4 half the widest
            // gap of the code book (0.3038 between -1 and -0.696) times absmax. Storing the scale (and
            // minimum) in 16 bits moves every level by at most 2^-8 relative (bf16) of its magnitude.
            // The search keeps a group only if its squared error is smaller, so its bound is the group's
            // RTN squared error, checked below as an RMS bound.
            double step = 0.0;
            if (spec.codebook == QuantCodebook::nf4) {
              step = 0.3038 * absmax;
            } else if (spec.symmetric) {
              step = absmax / static_cast<double>((1 << (spec.bits - 1)) - 1);
            } else {
              step = (hi - lo) / static_cast<double>(levels);
            }
            const double storage = std::ldexp(1.0, -8) * (std::fabs(lo) + std::fabs(hi) + absmax) + 1e-30;
            double squared = 0.0;
            for (std::size_t c = group * g; c < (group + 1) * g; ++c) {
              const double e = std::fabs((*w)(r, c) - back(r, c));
              squared += e * e;
              if (method == QuantMethod::round_to_nearest && !(e <= 0.5 * step + storage)) {
                FAIL("row " << r << " col " << c << ": error " << e << " > bound " << 0.5 * step + storage);
              }
            }
            const double rms = std::sqrt(squared / static_cast<double>(g));
            REQUIRE(rms <= 0.5 * step + storage);
          }
        }
        // The search never loses to round to nearest on the whole matrix.
        if (method == QuantMethod::search) {
          CHECK(error_report(*w, q).rmse <= error_report(*w, quantize(*w, spec)).rmse);
        }
      }
    }
  }
}

TEST_CASE("The search lowers the error on heavy-tailed weights", "[quant]") {
  const Tensor<float> heavy = heavy_tailed({64, 512}, 23);
  for (const QuantSpec& spec : {QuantSpec{4, 64, true}, QuantSpec{4, 64, false}, QuantSpec::nf4(64)}) {
    const QuantErrorReport rtn = error_report(heavy, quantize(heavy, spec));
    const QuantErrorReport searched = error_report(heavy, quantize(heavy, spec, QuantMethod::search));
    INFO(spec.to_string() << ": rtn rmse " << rtn.rmse << ", search rmse " << searched.rmse);
    CHECK(searched.rmse < 0.97 * rtn.rmse);
    CHECK(searched.snr_db > rtn.snr_db);
  }
}

TEST_CASE("Error report: RMSE, max error and SNR", "[quant]") {
  Tensor<float> a({1, 4}), b({1, 4});
  for (std::size_t i = 0; i < 4; ++i) a(0, i) = 2.0f;
  b = a;
  b(0, 3) = 0.0f;  // one error of 2
  const QuantErrorReport r = error_report(a, b);
  CHECK(r.rmse == Approx(1.0));
  CHECK(r.max_abs_error == 2.0);
  CHECK(r.snr_db == Approx(10.0 * std::log10(16.0 / 4.0)));
  CHECK(std::isinf(error_report(a, a).snr_db));
  PERSONA_REQUIRE_ERROR(error_report(a, Tensor<float>({2, 2})), shape_mismatch, "[2, 2]");
}

TEST_CASE("Quantizing NaN or Inf is an Error naming the element", "[quant]") {
  Tensor<float> w = random_tensor({3, 64}, 24);
  w(2, 41) = std::numeric_limits<float>::quiet_NaN();
  PERSONA_REQUIRE_ERROR(quantize(w, QuantSpec{}), invalid_argument, "element [2, 41] is nan");
  w(2, 41) = -std::numeric_limits<float>::infinity();
  PERSONA_REQUIRE_ERROR(quantize(w, QuantSpec{}), invalid_argument, "element [2, 41] is -inf");
  Tensor<float> huge({1, 32});
  huge(0, 0) = 1e30f;  // its f16 scale overflows
  PERSONA_REQUIRE_ERROR(quantize(huge, QuantSpec{}), out_of_range, "overflow the scale type f16");
  CHECK_NOTHROW(quantize(huge, QuantSpec{4, 32, true, DType::f32}));
  PERSONA_REQUIRE_ERROR(quantize(random_tensor({2, 40}, 1), QuantSpec{}), shape_mismatch, "cols = 40");
}

TEST_CASE("Quantization gives the same bytes on any thread count", "[quant]") {
  const Tensor<float> w = heavy_tailed({70, 256}, 31);
  for (const QuantSpec& spec : {QuantSpec{4, 32, false}, QuantSpec{2, 64, true}, QuantSpec::nf4(128)}) {
    QuantizedMatrix one, two;
    {
      ScopedNumThreads limit(1);
      one = quantize(w, spec, QuantMethod::search);
    }
    {
      ScopedNumThreads limit(2);
      two = quantize(w, spec, QuantMethod::search);
    }
    REQUIRE(one.bytes() == two.bytes());
    CHECK(std::memcmp(one.codes().data(), two.codes().data(), one.bytes()) == 0);
  }
}

TEST_CASE("Dequantize a row range", "[quant]") {
  const Tensor<float> w = random_tensor({40, 64}, 25);
  const QuantizedMatrix q = quantize(w, QuantSpec{8, 32, false});
  const Tensor<float> all = dequantize(q);
  Tensor<float> part({5, 64});
  dequantize(q, part, 17);
  for (std::size_t r = 0; r < 5; ++r) {
    for (std::size_t c = 0; c < 64; ++c) REQUIRE(part(r, c) == all(17 + r, c));
  }
  PERSONA_REQUIRE_ERROR(dequantize(q, part, 36), out_of_range, "rows [36, 41)");
}

TEST_CASE("Quantized products equal their scalar oracles bit for bit", "[quant][product]") {
  struct Shape3 {
    std::size_t m, n, k;
  };
  // Odd shapes: k = group size, n = 1, m = 0, n not a multiple of the panel or of two vectors; short rows
  // (k = 8, 16, 24: one group of one, two or four tiles, or several short groups).
  const std::vector<Shape3> shapes = {{2, 5, 32},   {1, 3, 64},   {1, 1, 128},  {0, 16, 128},
                                      {3, 17, 128}, {5, 48, 256}, {2, 33, 384}, {64, 40, 128},
                                      {1, 37, 8},   {3, 50, 16},  {2, 33, 24},  {6, 19, 32}};
  std::vector<QuantSpec> specs = all_specs();
  for_each_level_and_threads([&](IsaLevel, int) {
    for (const QuantSpec& spec : specs) {
      for (const Shape3& s : shapes) {
        if (s.k % spec.group_size != 0) continue;
        INFO(spec.to_string() << " m " << s.m << " n " << s.n << " k " << s.k);
        const Tensor<float> w = random_tensor({s.n, s.k}, 26);
        const Tensor<float> x = random_tensor({s.m, s.k}, 27, 2.0f);
        const QuantizedMatrix q = quantize(w, spec);
        for (QuantProductPath path : {QuantProductPath::f32_activations, QuantProductPath::int8_activations}) {
          Tensor<float> fast({s.m, s.n}), ref({s.m, s.n});
          quantized_matmul(x, q, fast, path);
          quantized_matmul_ref(x, q, ref, path);
          if (!same_bits(fast, ref)) {
            for (std::size_t i = 0; i < fast.numel(); ++i) {
              if (std::bit_cast<std::uint32_t>(fast.data()[i]) != std::bit_cast<std::uint32_t>(ref.data()[i])) {
                FAIL((path == QuantProductPath::int8_activations ? "int8" : "f32")
                     << " path, element " << i << ": " << fast.data()[i] << " vs reference " << ref.data()[i]);
              }
            }
          }
        }
      }
    }
  });
}

TEST_CASE("Quantized products agree with dequantize-then-matmul", "[quant][product]") {
  const std::size_t m = 7, n = 37, k = 256;
  const Tensor<float> x = random_tensor({m, k}, 28);
  const Tensor<float> w = random_tensor({n, k}, 29);
  for (const QuantSpec& spec : all_specs()) {
    INFO(spec.to_string());
    const QuantizedMatrix q = quantize(w, spec);
    const Tensor<float> dq = dequantize(q);
    Tensor<float> exact({m, n}), abs_exact({m, n}), y({m, n});
    matmul_ref(x, dq, exact, Transpose::yes);
    Tensor<float> abs_x = x, abs_dq = dq;
    for (float& v : abs_x.span()) v = std::fabs(v);
    for (float& v : abs_dq.span()) v = std::fabs(v);
    matmul_ref(abs_x, abs_dq, abs_exact, Transpose::yes);

    // f32 path: the same products summed in another order: within 2 k u sum |x w| (plus the group
    // minimum's term, bounded the same way).
    quantized_matmul(x, q, y, QuantProductPath::f32_activations);
    for (std::size_t i = 0; i < y.numel(); ++i) {
      REQUIRE(std::fabs(y.data()[i] - exact.data()[i]) <= 2.0 * k * 0x1p-24 * abs_exact.data()[i] + 1e-6);
    }
    // int8 path: each activation is rounded to 1/254 of its group's absmax, so the error per product is at
    // most |w| absmax_x / 254; NF4 codes also move by up to 0.5/127 of the scale.
    quantized_matmul(x, q, y, QuantProductPath::int8_activations);
    float absmax_x = 0.0f;
    for (float v : x.span()) absmax_x = std::max(absmax_x, std::fabs(v));
    for (std::size_t t = 0; t < m; ++t) {
      for (std::size_t r = 0; r < n; ++r) {
        double sum_w = 0.0, sum_scale = 0.0;
        for (std::size_t c = 0; c < k; ++c) sum_w += std::fabs(dq(r, c));
        for (std::size_t g = 0; g < k / spec.group_size; ++g)
          sum_scale += static_cast<double>(q.scale(r, g)) * static_cast<double>(spec.group_size);
        const double nf4_term = spec.codebook == QuantCodebook::nf4 ? sum_scale * absmax_x * 0.5 / 127.0 : 0.0;
        const double bound = sum_w * absmax_x / 254.0 + nf4_term + 2.0 * k * 0x1p-24 * abs_exact(t, r) + 1e-5;
        REQUIRE(std::fabs(y(t, r) - exact(t, r)) <= bound);
      }
    }
  }
}

TEST_CASE("Quantized products reject bad shapes and non-finite activations", "[quant][product]") {
  const QuantizedMatrix q = quantize(random_tensor({8, 64}, 30), QuantSpec{});
  Tensor<float> x({2, 64}), y({2, 8});
  Tensor<float> x_wrong({2, 32}), y_wrong({2, 9});
  PERSONA_REQUIRE_ERROR(quantized_matmul(x_wrong, q, y), shape_mismatch, "x needs 64 columns");
  PERSONA_REQUIRE_ERROR(quantized_matmul(x, q, y_wrong), shape_mismatch, "y has shape [2, 9]");
  x(1, 5) = std::numeric_limits<float>::infinity();
  PERSONA_REQUIRE_ERROR(quantized_matmul(x, q, y), invalid_argument, "activation [1, 5] is inf");
  // The f32 path has no int8 step: the Inf simply reaches the outputs, as in any f32 product.
  quantized_matmul(x, q, y, QuantProductPath::f32_activations);
  CHECK(!std::isfinite(y(1, 0)));
}

TEST_CASE("Activation quantization: zero, subnormal, huge and non-finite groups at every level", "[quant][product]") {
  // One token per row; each group of every row is of another kind, so the vector path meets them all.
  const std::size_t k = 256;
  Tensor<float> x = random_tensor({4, k}, 40);
  for (std::size_t c = 0; c < k; ++c) {
    x(0, c) = c < 64 ? 0.0f : x(0, c);                                // zero groups
    if (c >= 64 && c < 128) x(1, c) = c % 5 == 0 ? -3e-39f : 1e-45f;  // subnormal absmax: 127 / absmax overflows
    if (c >= 128) x(2, c) *= 1e37f;                                   // huge, still finite
    x(3, c) = (c % 32 == 7) ? 127.0f : x(3, c) * 0.01f;               // a spike per group
  }
  for (const QuantSpec& spec : {QuantSpec{4, 8, true}, QuantSpec{4, 16, true}, QuantSpec{4, 32, true},
                                QuantSpec{8, 64, false}, QuantSpec{2, 128, true}}) {
    INFO(spec.to_string());
    require_every_level_matches_oracle(x, quantize(random_tensor({21, k}, 41), spec));
  }
  // A NaN or Inf anywhere is named, whichever group (and so whichever part of the vector loop) holds it.
  for (std::size_t c : {std::size_t{0}, std::size_t{31}, std::size_t{100}, k - 1}) {
    for (IsaLevel level : supported_isa_levels()) {
      ScopedIsaLevel isa(level);
      Tensor<float> bad = random_tensor({2, k}, 42);
      bad(1, c) = c % 2 == 0 ? std::numeric_limits<float>::quiet_NaN() : -std::numeric_limits<float>::infinity();
      const QuantizedMatrix q = quantize(random_tensor({3, k}, 43), QuantSpec{4, 32, true});
      Tensor<float> y({2, 3});
      PERSONA_REQUIRE_ERROR(quantized_matmul(bad, q, y), invalid_argument, fmt::format("activation [1, {}] is", c));
    }
  }
}

TEST_CASE("Edge cases: subnormal activations, overlapping outputs, minima of symmetric specs", "[quant][product]") {
  const QuantizedMatrix q = quantize(random_tensor({16, 32}, 32), QuantSpec{4, 32, true});
  // Activations so small that 127 / absmax would overflow: still exact at every level.
  Tensor<float> tiny({2, 32});
  for (std::size_t c = 0; c < 32; ++c) tiny(0, c) = c % 3 == 0 ? 1e-40f : 0.0f;
  const Tensor<float> ref = require_every_level_matches_oracle(tiny, q);
  for (float v : ref.span()) CHECK(std::isfinite(v));
  // y overlapping x is refused; errors name the public function.
  Tensor<float> buffer({2, 48});
  TensorView<const float> x(buffer.data(), {2, 32}, {48, 1}, buffer.numel());
  TensorView<float> y(buffer.data() + 16, {2, 16}, {48, 1}, buffer.numel() - 16);
  PERSONA_REQUIRE_ERROR(quantized_matmul(x, q, y), invalid_argument, "in quantized_matmul: y overlaps x");
  Tensor<float> nan_w({1, 32});
  nan_w(0, 3) = std::numeric_limits<float>::quiet_NaN();
  PERSONA_REQUIRE_ERROR(quantize(nan_w, QuantSpec{}), invalid_argument, "in quantize: element [0, 3] is nan");
  QuantizedMatrix symmetric(16, 32, QuantSpec{4, 32, true});
  PERSONA_REQUIRE_ERROR(symmetric.set_minimum(0, 0, 1.0f), invalid_argument, "stores no minima");
}
