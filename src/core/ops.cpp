// Validation, threading and dispatch for the dense ops; the arithmetic is in the kernel tables.
#include "persona/core/ops.hpp"

#include "core/kernels/core_kernel_table.hpp"
#include "persona/core/threading.hpp"

#include <array>
#include <cmath>
#include <numbers>
#include <vector>

namespace persona {
namespace {

using detail::CoreKernelTable;

// Work is cut into fixed chunks (never by thread count) so results are identical for any thread count.
constexpr std::size_t kRowGrain = 16;
constexpr std::size_t kMatmulRowTile = 128;
constexpr std::size_t kMatmulColTile = 256;
constexpr std::size_t kMaxHeadDim = 1024;

struct Rows {
  std::size_t rows, cols;
};

// Rank-2 (or rank-1, as one row) view with contiguous rows.
template <class T>
Rows check_rows(const TensorView<T>& v, const char* function, const char* name) {
  if (v.rank() != 1 && v.rank() != 2) {
    PERSONA_THROW_AT(function, shape_mismatch, "{} must have rank 1 or 2, got shape {}", name, v.shape().to_string());
  }
  const std::size_t cols = v.dim(v.rank() - 1);
  if (cols > 1 && v.stride(v.rank() - 1) != 1) {
    PERSONA_THROW_AT(function, invalid_argument, "{} must have contiguous rows (last stride 1), got strides {}", name,
                     v.strides().to_string());
  }
  return {v.rank() == 2 ? v.dim(0) : 1, cols};
}

template <class T>
std::size_t row_stride(const TensorView<T>& v) {
  return v.rank() == 2 ? v.stride(0) : v.dim(0);
}

template <class A, class B>
void check_same_shape(const TensorView<A>& a, const TensorView<B>& b, const char* function, const char* name_a,
                      const char* name_b) {
  if (!(a.shape() == b.shape())) {
    PERSONA_THROW_AT(function, shape_mismatch, "{} has shape {} but {} has shape {}", name_a, a.shape().to_string(),
                     name_b, b.shape().to_string());
  }
}

// The span of memory a view can touch, for overlap checks.
template <class T>
std::pair<const char*, const char*> extent(const TensorView<T>& v) {
  if (v.empty()) return {nullptr, nullptr};
  std::size_t last = 0;
  for (std::size_t d = 0; d < v.rank(); ++d) last += (v.dim(d) - 1) * v.stride(d);
  const auto* begin = reinterpret_cast<const char*>(v.data());
  return {begin, begin + (last + 1) * sizeof(T)};
}

// `out` may be exactly `in` (same data and strides); any other overlap is an Error.
template <class T>
void check_no_partial_overlap(const TensorView<const float>& in, const TensorView<T>& out, const char* function,
                              const char* name_in) {
  const auto [ib, ie] = extent(in);
  const auto [ob, oe] = extent(out);
  if (ib == nullptr || ob == nullptr || ie <= ob || oe <= ib) return;
  const bool same = in.data() == out.data() && in.strides() == out.strides();
  if (!same) {
    PERSONA_THROW_AT(function, invalid_argument,
                     "out overlaps {} without being the same view (in-place needs identical views)", name_in);
  }
}

template <class Kernel>
void run_rows(TensorView<const float> x, TensorView<float> out, const char* function, bool threaded, Kernel&& kernel) {
  const Rows r = check_rows(x, function, "x");
  check_rows(out, function, "out");
  check_same_shape(x, out, function, "x", "out");
  check_no_partial_overlap(x, out, function, "x");
  const std::size_t xs = row_stride(x), os = row_stride(out);
  auto body = [&](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) kernel(i, x.data() + i * xs, out.data() + i * os, r.cols);
  };
  if (threaded) {
    parallel_for(r.rows, kRowGrain, body);
  } else {
    body(0, r.rows);
  }
}

void rmsnorm_impl(const CoreKernelTable& k, bool threaded, TensorView<const float> x, std::span<const float> weight,
                  float eps, TensorView<float> out, const char* function) {
  const Rows r = check_rows(x, function, "x");
  if (weight.size() != r.cols) {
    PERSONA_THROW_AT(function, shape_mismatch, "weight has {} elements but x has shape {} (expected {})", weight.size(),
                     x.shape().to_string(), r.cols);
  }
  if (!(eps >= 0.0f) || !std::isfinite(eps)) {
    PERSONA_THROW_AT(function, invalid_argument, "eps must be finite and >= 0, got {}", eps);
  }
  if (r.cols == 0 && r.rows > 0) {
    PERSONA_THROW_AT(function, invalid_argument, "rows of length 0 have no mean square");
  }
  run_rows(x, out, function, threaded,
           [&](std::size_t, const float* in, float* y, std::size_t n) { k.rmsnorm(in, weight.data(), eps, y, n); });
}

void softmax_impl(const CoreKernelTable& k, bool threaded, TensorView<const float> x, TensorView<float> out,
                  const char* function) {
  run_rows(x, out, function, threaded,
           [&](std::size_t, const float* in, float* y, std::size_t n) { k.softmax(in, y, n); });
}

void silu_impl(const CoreKernelTable& k, bool threaded, TensorView<const float> x, TensorView<float> out,
               const char* function) {
  run_rows(x, out, function, threaded,
           [&](std::size_t, const float* in, float* y, std::size_t n) { k.silu(in, y, n); });
}

void swiglu_impl(const CoreKernelTable& k, bool threaded, TensorView<const float> gate, TensorView<const float> up,
                 TensorView<float> out, const char* function) {
  check_rows(up, function, "up");
  check_same_shape(gate, up, function, "gate", "up");
  check_no_partial_overlap(up, out, function, "up");
  const std::size_t us = row_stride(up);
  run_rows(gate, out, function, threaded,
           [&](std::size_t row, const float* g, float* y, std::size_t n) { k.swiglu(g, up.data() + row * us, y, n); });
}

void matmul_impl(const CoreKernelTable& k, bool threaded, TensorView<const float> a, TensorView<const float> b,
                 TensorView<float> c, Transpose transpose_b, const char* function) {
  for (auto [v, name] : {std::pair{&a, "a"}, std::pair{&b, "b"}}) {
    if (v->rank() != 2) {
      PERSONA_THROW_AT(function, shape_mismatch, "{} must have rank 2, got shape {}", name, v->shape().to_string());
    }
  }
  if (c.rank() != 2) {
    PERSONA_THROW_AT(function, shape_mismatch, "c must have rank 2, got shape {}", c.shape().to_string());
  }
  const bool bt = transpose_b == Transpose::yes;
  const std::size_t m = a.dim(0), k_dim = a.dim(1);
  const std::size_t b_k = bt ? b.dim(1) : b.dim(0), n = bt ? b.dim(0) : b.dim(1);
  if (b_k != k_dim) {
    PERSONA_THROW_AT(function, shape_mismatch, "a {} and b {}{} disagree on the inner dimension ({} vs {})",
                     a.shape().to_string(), b.shape().to_string(), bt ? " (transposed)" : "", k_dim, b_k);
  }
  if (c.dim(0) != m || c.dim(1) != n) {
    PERSONA_THROW_AT(function, shape_mismatch, "c has shape {} but a {} times b{} {} gives [{}, {}]",
                     c.shape().to_string(), a.shape().to_string(), bt ? "^T" : "", b.shape().to_string(), m, n);
  }
  check_rows(a, function, "a");
  check_rows(b, function, "b");
  check_rows(c, function, "c");
  check_no_partial_overlap(a, c, function, "a");
  check_no_partial_overlap(b, c, function, "b");
  if (m == 0 || n == 0) return;
  if ((a.data() == static_cast<const float*>(c.data()) || b.data() == static_cast<const float*>(c.data())) &&
      k_dim > 0) {
    PERSONA_THROW_AT(function, invalid_argument, "c must not alias a or b");
  }
  const std::size_t row_tiles = (m + kMatmulRowTile - 1) / kMatmulRowTile;
  const std::size_t col_tiles = (n + kMatmulColTile - 1) / kMatmulColTile;
  auto tile = [&](std::size_t t) {
    const std::size_t i0 = (t / col_tiles) * kMatmulRowTile, j0 = (t % col_tiles) * kMatmulColTile;
    const std::size_t mi = std::min(kMatmulRowTile, m - i0), nj = std::min(kMatmulColTile, n - j0);
    detail::MatmulArgs args{};
    args.a = a.data() + i0 * a.stride(0);
    args.b = bt ? b.data() + j0 * b.stride(0) : b.data() + j0;
    args.c = c.data() + i0 * c.stride(0) + j0;
    args.m = mi;
    args.n = nj;
    args.k = k_dim;
    args.lda = a.stride(0);
    args.ldb = b.stride(0);
    args.ldc = c.stride(0);
    args.b_transposed = bt;
    k.matmul(args);
  };
  const std::size_t tiles = row_tiles * col_tiles;
  if (threaded) {
    parallel_for(tiles, 1, [&](std::size_t begin, std::size_t end) {
      for (std::size_t t = begin; t < end; ++t) tile(t);
    });
  } else {
    for (std::size_t t = 0; t < tiles; ++t) tile(t);
  }
}

template <class B>
float pair_impl(float (*kernel)(const float*, const B*, std::size_t) noexcept, std::span<const float> a,
                std::span<const B> b, const char* function) {
  if (a.size() != b.size()) {
    PERSONA_THROW_AT(function, shape_mismatch, "a has {} elements but b has {}", a.size(), b.size());
  }
  return kernel(a.data(), b.data(), a.size());
}

// Into inv_freq ([head_dim / 2]), so that rope itself allocates nothing.
void fill_rope_inverse_frequencies(const RopeConfig& config, std::size_t head_dim, std::span<double> inv_freq,
                                   const char* function) {
  PERSONA_CHECK_AT(function, invalid_argument, config.theta > 1.0f && std::isfinite(config.theta),
                   "theta must be finite and > 1, got {}", config.theta);
  PERSONA_CHECK_AT(function, invalid_argument, head_dim % 2 == 0 && head_dim > 0,
                   "head_dim must be even and > 0, got {}", head_dim);
  for (std::size_t i = 0; i < inv_freq.size(); ++i) {
    inv_freq[i] =
        std::pow(static_cast<double>(config.theta), -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
  }
  if (config.scaling == RopeScaling::none) return;
  PERSONA_CHECK_AT(function, invalid_argument, config.factor >= 1.0f && std::isfinite(config.factor),
                   "rope scaling factor must be finite and >= 1, got {}", config.factor);
  const double factor = config.factor;
  if (config.scaling == RopeScaling::linear) {
    for (double& f : inv_freq) f /= factor;
    return;
  }
  PERSONA_CHECK_AT(function, invalid_argument,
                   config.low_freq_factor > 0.0f && config.high_freq_factor > config.low_freq_factor &&
                       std::isfinite(config.high_freq_factor),
                   "llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor, got {} and {}",
                   config.low_freq_factor, config.high_freq_factor);
  PERSONA_CHECK_AT(function, invalid_argument, config.original_max_positions > 0,
                   "llama3 rope scaling needs original_max_position_embeddings > 0");
  // transformers' _compute_llama3_parameters, in double.
  const auto old_context = static_cast<double>(config.original_max_positions);
  const double low = config.low_freq_factor, high = config.high_freq_factor;
  const double low_freq_wavelen = old_context / low, high_freq_wavelen = old_context / high;
  for (double& f : inv_freq) {
    const double wavelen = 2.0 * std::numbers::pi / f;
    if (wavelen > low_freq_wavelen) {
      f /= factor;
    } else if (!(wavelen < high_freq_wavelen)) {
      const double smooth = (old_context / wavelen - low) / (high - low);
      f = (1.0 - smooth) * f / factor + smooth * f;
    }
  }
}

// Angles in double so that the SIMD and reference paths share the exact same cos/sin tables.
template <class PositionOf>
void rope_impl(const CoreKernelTable& k, bool threaded, TensorView<float> x, std::size_t tokens, PositionOf position_of,
               const RopeConfig& config, const char* function) {
  if (x.rank() != 3) {
    PERSONA_THROW_AT(function, shape_mismatch, "x must be [tokens, heads, head_dim], got shape {}",
                     x.shape().to_string());
  }
  if (x.dim(0) != tokens) {
    PERSONA_THROW_AT(function, shape_mismatch, "{} positions given for {} tokens", tokens, x.dim(0));
  }
  const std::size_t heads = x.dim(1), head_dim = x.dim(2);
  if (head_dim % 2 != 0 || head_dim > kMaxHeadDim) {
    PERSONA_THROW_AT(function, invalid_argument, "head_dim must be even and <= {}, got {}", kMaxHeadDim, head_dim);
  }
  std::array<double, kMaxHeadDim / 2> inv_freq{};
  fill_rope_inverse_frequencies(config, head_dim, std::span(inv_freq.data(), head_dim / 2), function);
  if (x.empty()) return;
  if (x.stride(2) != 1 || (heads > 1 && x.stride(1) != head_dim)) {
    PERSONA_THROW_AT(function, invalid_argument, "each token's heads must be contiguous, got strides {}",
                     x.strides().to_string());
  }
  const std::size_t half = head_dim / 2;
  auto body = [&](std::size_t begin, std::size_t end) {
    std::array<float, kMaxHeadDim / 2> cos{}, sin{};
    for (std::size_t t = begin; t < end; ++t) {
      const double position = static_cast<double>(position_of(t));
      for (std::size_t i = 0; i < half; ++i) {
        cos[i] = static_cast<float>(std::cos(position * inv_freq[i]));
        sin[i] = static_cast<float>(std::sin(position * inv_freq[i]));
      }
      float* row = x.data() + t * x.stride(0);
      for (std::size_t h = 0; h < heads; ++h) k.rope(row + h * head_dim, cos.data(), sin.data(), half);
    }
  };
  if (threaded) {
    parallel_for(tokens, kRowGrain, body);
  } else {
    body(0, tokens);
  }
}

const CoreKernelTable& ref() { return detail::reference_core_kernels(); }
const CoreKernelTable& fast() { return detail::core_kernels(); }

}  // namespace

std::vector<double> rope_inverse_frequencies(const RopeConfig& config, std::size_t head_dim) {
  std::vector<double> inv_freq(head_dim / 2);
  fill_rope_inverse_frequencies(config, head_dim, inv_freq, "rope_inverse_frequencies");
  return inv_freq;
}

void matmul(TensorView<const float> a, TensorView<const float> b, TensorView<float> c, Transpose transpose_b) {
  matmul_impl(fast(), true, a, b, c, transpose_b, "matmul");
}
void matmul_ref(TensorView<const float> a, TensorView<const float> b, TensorView<float> c, Transpose transpose_b) {
  matmul_impl(ref(), false, a, b, c, transpose_b, "matmul_ref");
}

float dot(std::span<const float> a, std::span<const float> b) { return pair_impl(fast().dot, a, b, "dot"); }
float dot_ref(std::span<const float> a, std::span<const float> b) { return pair_impl(ref().dot, a, b, "dot_ref"); }

void rmsnorm(TensorView<const float> x, std::span<const float> weight, float eps, TensorView<float> out) {
  rmsnorm_impl(fast(), true, x, weight, eps, out, "rmsnorm");
}
void rmsnorm_ref(TensorView<const float> x, std::span<const float> weight, float eps, TensorView<float> out) {
  rmsnorm_impl(ref(), false, x, weight, eps, out, "rmsnorm_ref");
}

void softmax(TensorView<const float> x, TensorView<float> out) { softmax_impl(fast(), true, x, out, "softmax"); }
void softmax_ref(TensorView<const float> x, TensorView<float> out) {
  softmax_impl(ref(), false, x, out, "softmax_ref");
}

void silu(TensorView<const float> x, TensorView<float> out) { silu_impl(fast(), true, x, out, "silu"); }
void silu_ref(TensorView<const float> x, TensorView<float> out) { silu_impl(ref(), false, x, out, "silu_ref"); }

void swiglu(TensorView<const float> gate, TensorView<const float> up, TensorView<float> out) {
  swiglu_impl(fast(), true, gate, up, out, "swiglu");
}
void swiglu_ref(TensorView<const float> gate, TensorView<const float> up, TensorView<float> out) {
  swiglu_impl(ref(), false, gate, up, out, "swiglu_ref");
}

void rope(TensorView<float> x, std::size_t position_offset, const RopeConfig& config) {
  rope_impl(
      fast(), true, x, x.rank() == 3 ? x.dim(0) : 0, [&](std::size_t t) { return position_offset + t; }, config,
      "rope");
}
void rope_ref(TensorView<float> x, std::size_t position_offset, const RopeConfig& config) {
  rope_impl(
      ref(), false, x, x.rank() == 3 ? x.dim(0) : 0, [&](std::size_t t) { return position_offset + t; }, config,
      "rope_ref");
}
void rope(TensorView<float> x, std::span<const std::size_t> positions, const RopeConfig& config) {
  rope_impl(
      fast(), true, x, positions.size(), [&](std::size_t t) { return positions[t]; }, config, "rope");
}
void rope_ref(TensorView<float> x, std::span<const std::size_t> positions, const RopeConfig& config) {
  rope_impl(
      ref(), false, x, positions.size(), [&](std::size_t t) { return positions[t]; }, config, "rope_ref");
}

}  // namespace persona
