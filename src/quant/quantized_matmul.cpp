// Validation, activation preparation and threading for the quantized products.
#include "persona/quant/quantized_matmul.hpp"

#include "core/thread_scratch.hpp"
#include "persona/core/threading.hpp"
#include "quant/quant_product.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace persona {
namespace {

// Panels per chunk: fixed, so the split never depends on the thread count (nor could it change a
// result: every output row is computed on its own).
constexpr std::size_t kPanelGrain = 4;

// Per token and group (see quantize_activations_ref); the first non-finite activation is named.
// Symmetric absmax / 127 with one scale per weight group, not kv's per-row or ann's min/max codec: the
// groups must line up with the weights' so that each group's integer dot product is scaled once, and the
// code sums let asymmetric weights fold their minima in without a zero point on the activations.
void quantize_activations(const detail::QuantKernelTable& kernels, TensorView<const float> x, std::size_t group_size,
                          detail::QuantActivationScratch& out, const char* function) {
  const std::size_t m = x.dim(0), k = x.dim(1), groups = k / group_size;
  for (std::size_t t = 0; t < m; ++t) {
    const float* row = x.data() + t * x.stride(0);
    if (kernels.quantize_activations(row, k, group_size, out.codes.data() + t * k, out.scales.data() + t * groups,
                                     out.code_sums.data() + t * groups)) {
      continue;
    }
    const std::size_t c =
        static_cast<std::size_t>(std::find_if_not(row, row + k, [](float v) { return std::isfinite(v); }) - row);
    PERSONA_THROW_AT(function, invalid_argument, "activation [{}, {}] is {}: it cannot be quantized to int8", t, c,
                     row[c]);
  }
}

// Group sums in column order, for the minima (zero for symmetric specs, but the kernels multiply anyway).
void sum_groups(TensorView<const float> x, std::size_t group_size, detail::QuantActivationScratch& out) {
  const std::size_t m = x.dim(0), groups = x.dim(1) / group_size;
  for (std::size_t t = 0; t < m; ++t) {
    const float* row = x.data() + t * x.stride(0);
    for (std::size_t g = 0; g < groups; ++g) {
      float sum = 0.0f;
      for (std::size_t c = g * group_size; c < (g + 1) * group_size; ++c) sum += row[c];
      out.sums[t * groups + g] = sum;
    }
  }
}

}  // namespace

namespace detail {

void QuantActivationScratch::reserve(std::size_t m, std::size_t k, std::size_t group_size) {
  const std::size_t groups = m * (k / group_size);
  if (sums.size() < groups) sums.resize(groups);
  if (codes.size() < m * k) codes.resize(m * k);
  if (scales.size() < groups) scales.resize(groups);
  if (code_sums.size() < groups) code_sums.resize(groups);
}

void quantized_product(const QuantKernelTable& kernels, TensorView<const float> x, const QuantizedMatrix& w,
                       TensorView<float> y, QuantProductPath path, QuantActivationScratch& act, bool threaded,
                       const char* function, bool accumulate, float alpha) {
  if (x.rank() != 2 || y.rank() != 2) {
    PERSONA_THROW_AT(function, shape_mismatch, "x and y must have rank 2, got shapes {} and {}", x.shape().to_string(),
                     y.shape().to_string());
  }
  if (x.dim(1) != w.cols()) {
    PERSONA_THROW_AT(function, shape_mismatch, "x has shape {} but W is [{}, {}]: x needs {} columns",
                     x.shape().to_string(), w.rows(), w.cols(), w.cols());
  }
  if (y.dim(0) != x.dim(0) || y.dim(1) != w.rows()) {
    PERSONA_THROW_AT(function, shape_mismatch, "y has shape {} but x {} times W^T [{}, {}] gives [{}, {}]",
                     y.shape().to_string(), x.shape().to_string(), w.cols(), w.rows(), x.dim(0), w.rows());
  }
  if ((x.dim(1) > 1 && x.stride(1) != 1) || (y.dim(1) > 1 && y.stride(1) != 1)) {
    PERSONA_THROW_AT(function, invalid_argument, "x and y must have contiguous rows, got strides {} and {}",
                     x.strides().to_string(), y.strides().to_string());
  }
  const std::size_t m = x.dim(0), n = w.rows();
  if (m == 0 || n == 0) return;
  const auto* x_begin = reinterpret_cast<const char*>(x.data());
  const auto* y_begin = reinterpret_cast<const char*>(y.data());
  const std::size_t x_bytes = ((m - 1) * x.stride(0) + x.dim(1)) * sizeof(float);
  const std::size_t y_bytes = ((m - 1) * y.stride(0) + n) * sizeof(float);
  if (x.dim(1) > 0 && x_begin < y_begin + y_bytes && y_begin < x_begin + x_bytes) {
    PERSONA_THROW_AT(function, invalid_argument, "y overlaps x: the product cannot be computed in place");
  }

  const bool int8_path = path == QuantProductPath::int8_activations;
  act.reserve(m, w.cols(), w.spec().group_size);
  if (int8_path) {
    quantize_activations(kernels, x, w.spec().group_size, act, function);
  } else {
    sum_groups(x, w.spec().group_size, act);
  }
  detail::QuantProductArgs args{};
  args.codes = w.codes().data();
  args.scales = w.scales().data();
  args.minima = w.spec().symmetric ? nullptr : w.minima().data();
  args.bits = w.spec().bits;
  args.group_size = w.spec().group_size;
  args.scale_type = w.spec().scale_type;
  args.codebook = w.spec().codebook;
  args.tiles_per_panel = w.tiles_per_panel();
  args.groups = w.groups_per_row();
  args.n = n;
  args.k = w.cols();
  args.m = m;
  args.x = x.data();
  args.ldx = x.stride(0);
  args.x_sums = act.sums.data();
  args.xq = act.codes.data();
  args.x_scales = act.scales.data();
  args.xq_sums = act.code_sums.data();
  args.y = y.data();
  args.ldy = y.stride(0);
  args.alpha = alpha;
  args.accumulate = accumulate;
  const auto kernel = int8_path ? kernels.product_int8 : kernels.product_f32;
  auto body = [&](std::size_t begin, std::size_t end) {
    detail::QuantProductArgs chunk = args;
    chunk.panel_begin = begin;
    chunk.panel_end = end;
    kernel(chunk);
  };
  if (threaded) {
    parallel_for(w.panels(), kPanelGrain, body);
  } else {
    body(0, w.panels());
  }
}

}  // namespace detail

void quantized_matmul(TensorView<const float> x, const QuantizedMatrix& w, TensorView<float> y, QuantProductPath path) {
  detail::ThreadScratch<detail::QuantActivationScratch> scratch;  // a warm product allocates nothing
  detail::quantized_product(detail::quant_kernels(active_isa_level()), x, w, y, path, scratch.get(), true,
                            "quantized_matmul");
}

void quantized_matmul_ref(TensorView<const float> x, const QuantizedMatrix& w, TensorView<float> y,
                          QuantProductPath path) {
  detail::QuantActivationScratch scratch;
  detail::quantized_product(detail::reference_quant_kernels(), x, w, y, path, scratch, false, "quantized_matmul_ref");
}

}  // namespace persona
