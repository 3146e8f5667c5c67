// Quantization of f32 matrices group by group, dequantization, and error reports.
#include "persona/quant/quantize.hpp"

#include "persona/core/threading.hpp"
#include "quant/quant_layout.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

namespace persona {
namespace {

constexpr std::size_t kRowGrain = 16;
constexpr std::size_t kMaxGroup = 128;

// One group's parameters and codes. `minimum` is the effective one (for symmetric specs -2^(b-1) scale).
struct GroupCodes {
  std::array<std::uint8_t, kMaxGroup> codes{};
  float scale = 0.0f;
  float minimum = 0.0f;
  double squared_error = std::numeric_limits<double>::infinity();
};

class GroupQuantizer {
 public:
  explicit GroupQuantizer(const QuantSpec& spec)
      : spec_(spec),
        nf4_(spec.codebook == QuantCodebook::nf4),
        max_code_((1 << spec.bits) - 1),
        offset_(detail::symmetric_offset(spec.bits)) {}

  GroupCodes quantize(const float* w, std::size_t n, QuantMethod method) const {
    float lo = w[0], hi = w[0];
    for (std::size_t i = 1; i < n; ++i) {
      lo = std::min(lo, w[i]);
      hi = std::max(hi, w[i]);
    }
    const float absmax = std::max(std::fabs(lo), std::fabs(hi));
    GroupCodes best = round_to_nearest(w, n, lo, hi, absmax);
    if (method == QuantMethod::search) search(w, n, lo, hi, absmax, best);
    return best;
  }

  float value(std::uint8_t code, float scale, float minimum) const noexcept {
    return nf4_ ? scale * kNf4Codebook[code] : scale * static_cast<float>(code) + minimum;
  }

 private:
  float stored(float value) const noexcept { return detail::round_to_param_type(value, spec_.scale_type); }

  // The effective minimum for a scale (and, for asymmetric specs, a free minimum).
  float minimum_for(float scale, float free_minimum) const noexcept {
    if (nf4_) return 0.0f;
    return spec_.symmetric ? -offset_ * scale : stored(free_minimum);
  }

  std::uint8_t nearest(float w, float scale, float minimum) const noexcept {
    if (nf4_) {
      const float t = scale != 0.0f ? w / scale : 0.0f;
      std::uint8_t code = 0;
      for (std::uint8_t c = 1; c < 16; ++c) {  // the table is sorted: the last midpoint below t wins
        if (t > 0.5f * (kNf4Codebook[c - 1] + kNf4Codebook[c])) code = c;
      }
      return code;
    }
    if (scale == 0.0f) return spec_.symmetric ? static_cast<std::uint8_t>(offset_) : 0;
    const float c = std::nearbyint((w - minimum) / scale);
    return static_cast<std::uint8_t>(std::clamp(c, 0.0f, static_cast<float>(max_code_)));
  }

  // Codes for fixed stored parameters (rounding is then optimal per element), and their error.
  void encode(const float* w, std::size_t n, float scale, float minimum, GroupCodes& out) const {
    out.scale = scale;
    out.minimum = minimum;
    out.squared_error = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      out.codes[i] = nearest(w[i], scale, minimum);
      const double e = static_cast<double>(w[i]) - value(out.codes[i], scale, minimum);
      out.squared_error += e * e;
    }
  }

  GroupCodes round_to_nearest(const float* w, std::size_t n, float lo, float hi, float absmax) const {
    float scale = 0.0f, free_minimum = 0.0f;
    if (nf4_) {
      scale = absmax;
    } else if (spec_.symmetric) {
      scale = absmax / (offset_ - 1.0f);  // codes -(2^(b-1) - 1) .. 2^(b-1) - 1; int2 is ternary
    } else {
      scale = (hi - lo) / static_cast<float>(max_code_);
      free_minimum = lo;
    }
    GroupCodes out;
    const float s = stored(scale);
    encode(w, n, s, minimum_for(s, free_minimum), out);
    return out;
  }

  // Candidate scales around the range-based one, each refit by least squares on its codes.
  void search(const float* w, std::size_t n, float lo, float hi, float absmax, GroupCodes& best) const {
    constexpr int kSteps = 24;
    GroupCodes candidate;
    for (int step = 0; step <= kSteps; ++step) {
      const float f = 0.7f + 0.4f * static_cast<float>(step) / kSteps;  // 0.7 .. 1.1 of the range scale
      float scale = 0.0f, free_minimum = lo;
      if (nf4_) {
        scale = absmax * f;
      } else if (spec_.symmetric) {
        scale = absmax * f / (offset_ - 0.5f);
      } else {
        scale = (hi - lo) * f / static_cast<float>(max_code_);
      }
      if (!(scale > 0.0f)) return;
      encode(w, n, stored(scale), minimum_for(stored(scale), free_minimum), candidate);
      refit(w, n, candidate);
      if (candidate.squared_error < best.squared_error) best = candidate;
    }
  }

  // Least-squares scale (and minimum) for fixed codes, stored, then codes re-chosen for them.
  void refit(const float* w, std::size_t n, GroupCodes& g) const {
    double sum_vv = 0.0, sum_vw = 0.0, sum_v = 0.0, sum_w = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      // Basis value of a code: nf4[c]; c - 2^(b-1) for symmetric linear; c for asymmetric.
      const double v =
          nf4_ ? kNf4Codebook[g.codes[i]] : static_cast<double>(g.codes[i]) - (spec_.symmetric ? offset_ : 0.0f);
      sum_vv += v * v;
      sum_vw += v * w[i];
      sum_v += v;
      sum_w += w[i];
    }
    const double count = static_cast<double>(n);
    double scale = 0.0, minimum = 0.0;
    if (nf4_ || spec_.symmetric) {
      if (sum_vv == 0.0) return;
      scale = sum_vw / sum_vv;
    } else {
      const double det = count * sum_vv - sum_v * sum_v;
      if (det == 0.0) return;
      scale = (count * sum_vw - sum_v * sum_w) / det;
      minimum = (sum_w - scale * sum_v) / count;
    }
    if (!(scale > 0.0)) return;
    const float s = stored(static_cast<float>(scale));
    encode(w, n, s, minimum_for(s, static_cast<float>(minimum)), g);
  }

  QuantSpec spec_;
  bool nf4_;
  int max_code_;
  float offset_;
};

// Errors here are the caller's, so they name quantize().
void check_matrix(TensorView<const float> w, const QuantSpec& spec) {
  spec.validate();
  if (w.rank() != 2) {
    PERSONA_THROW_AT("quantize", shape_mismatch, "the matrix to quantize must have rank 2, got shape {}",
                     w.shape().to_string());
  }
  if (w.dim(1) > 1 && w.stride(1) != 1) {
    PERSONA_THROW_AT("quantize", invalid_argument, "the matrix to quantize must have contiguous rows, strides {}",
                     w.strides().to_string());
  }
  for (std::size_t r = 0; r < w.dim(0); ++r) {
    const float* row = w.data() + r * w.stride(0);
    for (std::size_t c = 0; c < w.dim(1); ++c) {
      if (!std::isfinite(row[c])) {
        PERSONA_THROW_AT("quantize", invalid_argument,
                         "element [{}, {}] is {}: quantizing it would corrupt the weights", r, c, row[c]);
      }
    }
  }
}

}  // namespace

QuantizedMatrix quantize(TensorView<const float> w, const QuantSpec& spec, QuantMethod method) {
  check_matrix(w, spec);
  QuantizedMatrix q(w.dim(0), w.dim(1), spec);
  const GroupQuantizer quantizer(spec);
  const std::size_t groups = q.groups_per_row(), g = spec.group_size;
  // Every code byte belongs to one row, so any split is safe; whole panels per chunk keep two threads
  // from writing into the same 64-byte tile (false sharing).
  static_assert(kRowGrain % kPanelRows == 0);
  std::uint8_t* const code_bytes = q.codes().data();
  const std::size_t tiles = q.tiles_per_panel();
  parallel_for(q.rows(), kRowGrain, [&](std::size_t begin, std::size_t end) {
    for (std::size_t r = begin; r < end; ++r) {
      const float* row = w.data() + r * w.stride(0);
      for (std::size_t group = 0; group < groups; ++group) {
        const GroupCodes codes = quantizer.quantize(row + group * g, g, method);
        if (!std::isfinite(codes.scale) || !std::isfinite(codes.minimum)) {
          PERSONA_THROW_AT("quantize", out_of_range,
                           "row {} group {}: scale {} / minimum {} overflow the scale type {}", r, group, codes.scale,
                           codes.minimum, name_of(spec.scale_type));
        }
        q.set_scale(r, group, codes.scale);
        if (!spec.symmetric) q.set_minimum(r, group, codes.minimum);
        for (std::size_t i = 0; i < g; ++i) {  // inline: an out-of-line call per code dominated quantizing
          detail::write_code(code_bytes, tiles, spec.bits, r, group * g + i, codes.codes[i]);
        }
      }
    }
  });
  return q;
}

void dequantize(const QuantizedMatrix& q, TensorView<float> out, std::size_t row_begin) {
  PERSONA_CHECK_CODE(shape_mismatch, out.rank() == 2 && out.dim(1) == q.cols(),
                     "out has shape {} but the matrix has {} columns", out.shape().to_string(), q.cols());
  PERSONA_CHECK_CODE(out_of_range, row_begin <= q.rows() && out.dim(0) <= q.rows() - row_begin,
                     "rows [{}, {}) are outside the matrix's {} rows", row_begin, row_begin + out.dim(0), q.rows());
  PERSONA_CHECK(q.cols() <= 1 || out.stride(1) == 1, "out must have contiguous rows, strides {}",
                out.strides().to_string());
  const GroupQuantizer quantizer(q.spec());
  const std::size_t g = q.spec().group_size;
  const std::uint8_t* const code_bytes = q.codes().data();
  const std::size_t tiles = q.tiles_per_panel();
  parallel_for(out.dim(0), kRowGrain, [&](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) {
      const std::size_t r = row_begin + i;
      float* row = out.data() + i * out.stride(0);
      for (std::size_t group = 0; group < q.groups_per_row(); ++group) {
        const float scale = q.scale(r, group), minimum = q.minimum(r, group);
        for (std::size_t c = group * g; c < (group + 1) * g; ++c) {
          row[c] = quantizer.value(detail::read_code(code_bytes, tiles, q.spec().bits, r, c), scale, minimum);
        }
      }
    }
  });
}

Tensor<float> dequantize(const QuantizedMatrix& q) {
  Tensor<float> out({q.rows(), q.cols()});
  dequantize(q, out);
  return out;
}

QuantErrorReport error_report(TensorView<const float> reference, TensorView<const float> approx) {
  PERSONA_CHECK_CODE(shape_mismatch, reference.rank() == 2 && reference.shape() == approx.shape(),
                     "reference has shape {} but approx has shape {} (both must be rank 2)",
                     reference.shape().to_string(), approx.shape().to_string());
  double signal = 0.0, noise = 0.0, worst = 0.0;
  for (std::size_t r = 0; r < reference.dim(0); ++r) {
    for (std::size_t c = 0; c < reference.dim(1); ++c) {
      const double a = reference(r, c), e = a - approx(r, c);
      signal += a * a;
      noise += e * e;
      worst = std::max(worst, std::fabs(e));
    }
  }
  const double count = static_cast<double>(reference.numel());
  QuantErrorReport report;
  report.rmse = count > 0 ? std::sqrt(noise / count) : 0.0;
  report.max_abs_error = worst;
  report.snr_db = noise > 0.0 ? 10.0 * std::log10(signal / noise) : std::numeric_limits<double>::infinity();
  return report;
}

QuantErrorReport error_report(TensorView<const float> reference, const QuantizedMatrix& q) {
  PERSONA_CHECK_CODE(
      shape_mismatch, reference.rank() == 2 && reference.dim(0) == q.rows() && reference.dim(1) == q.cols(),
      "reference has shape {} but the quantized matrix is [{}, {}]", reference.shape().to_string(), q.rows(), q.cols());
  return error_report(reference, dequantize(q));
}

}  // namespace persona
