#include "persona/lora/lora_module.hpp"

#include "persona/core/ops.hpp"
#include "persona/quant/quantize.hpp"

#include <cmath>

namespace persona {

LoraModule::LoraModule(LoraMatrix a, LoraMatrix b, float alpha, LoraScaling scaling, Tensor<float> dora_magnitude)
    : a_(std::move(a)), b_(std::move(b)), alpha_(alpha), scaling_(scaling), magnitude_(std::move(dora_magnitude)) {
  PERSONA_CHECK_CODE(shape_mismatch, a_.rows() >= 1 && a_.cols() >= 1, "A must be [rank >= 1, in >= 1], got [{}, {}]",
                     a_.rows(), a_.cols());
  PERSONA_CHECK_CODE(shape_mismatch, b_.cols() == a_.rows(),
                     "B is [{}, {}] but A is [{}, {}]: B needs {} columns (the rank)", b_.rows(), b_.cols(), a_.rows(),
                     a_.cols(), a_.rows());
  PERSONA_CHECK(std::isfinite(alpha), "alpha must be finite, got {}", alpha);
  PERSONA_CHECK_CODE(shape_mismatch, magnitude_.empty() || (magnitude_.rank() == 1 && magnitude_.dim(0) == b_.rows()),
                     "the DoRA magnitude has shape {} but the module has {} outputs", magnitude_.shape().to_string(),
                     b_.rows());
  const auto rank = static_cast<float>(a_.rows());
  scale_ = scaling == LoraScaling::standard ? alpha / rank : alpha / std::sqrt(rank);
}

namespace {

void check_base(TensorView<const float> w, const LoraModule& module, const char* function) {
  if (w.rank() != 2 || w.dim(0) != module.out_features() || w.dim(1) != module.in_features()) {
    PERSONA_THROW_AT(function, shape_mismatch, "W has shape {} but the module is [out {}, in {}]",
                     w.shape().to_string(), module.out_features(), module.in_features());
  }
}

// scale * B A, [out, in].
Tensor<float> lora_delta(const LoraModule& module) {
  const Tensor<float> a = module.a().to_f32(), b = module.b().to_f32();
  Tensor<float> delta({module.out_features(), module.in_features()});
  matmul(b, a, delta);
  for (float& v : delta.span()) v *= module.scale();
  return delta;
}

}  // namespace

Tensor<float> dora_row_scale(const LoraModule& module, TensorView<const float> w) {
  check_base(w, module, "dora_row_scale");
  PERSONA_CHECK(module.dora(), "the module has no DoRA magnitude");
  const Tensor<float> delta = lora_delta(module);
  Tensor<float> scale({module.out_features()});
  for (std::size_t r = 0; r < w.dim(0); ++r) {
    double norm = 0.0;
    for (std::size_t c = 0; c < w.dim(1); ++c) {
      const double v = static_cast<double>(w(r, c)) + delta(r, c);
      norm += v * v;
    }
    scale(r) = static_cast<float>(module.dora_magnitude()(r) / std::sqrt(norm));
  }
  return scale;
}

void merge_lora(TensorView<float> w, const LoraModule& module) {
  check_base(w, module, "merge_lora");
  const Tensor<float> row_scale = module.dora() ? dora_row_scale(module, w) : Tensor<float>();
  const Tensor<float> delta = lora_delta(module);
  for (std::size_t r = 0; r < w.dim(0); ++r) {
    const float n = module.dora() ? row_scale(r) : 1.0f;
    for (std::size_t c = 0; c < w.dim(1); ++c) w(r, c) = n * (w(r, c) + delta(r, c));
  }
}

void unmerge_lora(TensorView<float> w, const LoraModule& module) {
  check_base(w, module, "unmerge_lora");
  PERSONA_CHECK_CODE(unsupported, !module.dora(),
                     "a merged DoRA module cannot be unmerged: its row norms are not recoverable from the merged "
                     "weight (keep a copy of W)");
  const Tensor<float> delta = lora_delta(module);
  for (std::size_t r = 0; r < w.dim(0); ++r) {
    for (std::size_t c = 0; c < w.dim(1); ++c) w(r, c) -= delta(r, c);
  }
}

}  // namespace persona
