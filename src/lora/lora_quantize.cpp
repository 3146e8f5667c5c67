#include "persona/lora/lora_quantize.hpp"

namespace persona {

std::optional<QuantSpec> lora_matrix_spec(std::size_t cols, const QuantSpec& spec) {
  spec.validate();
  for (std::size_t group = spec.group_size; group >= 8; group /= 2) {
    QuantSpec candidate = spec;
    candidate.group_size = group;
    if (cols % group != 0 || group % tile_traits(spec.bits).columns_per_tile != 0) continue;
    return candidate;
  }
  return std::nullopt;
}

namespace {

LoraMatrix quantize_matrix(const LoraMatrix& m, const QuantSpec& spec, QuantMethod method,
                           std::optional<QuantSpec>& used, QuantErrorReport& error) {
  used = lora_matrix_spec(m.cols(), spec);
  const Tensor<float> w = m.to_f32();
  if (!used) return LoraMatrix(w);
  QuantizedMatrix q = quantize(w, *used, method);
  error = error_report(w, q);
  return LoraMatrix(std::move(q));
}

}  // namespace

LoraModule quantize_lora(const LoraModule& module, const QuantSpec& spec, QuantMethod method, LoraQuantReport* report) {
  LoraQuantReport local;
  LoraQuantReport& r = report != nullptr ? *report : local;
  r = {};
  LoraMatrix a = quantize_matrix(module.a(), spec, method, r.a_spec, r.a);
  LoraMatrix b = quantize_matrix(module.b(), spec, method, r.b_spec, r.b);
  return LoraModule(std::move(a), std::move(b), module.alpha(), module.scaling(), module.dora_magnitude());
}

LoraAdapter quantize_lora(const LoraAdapter& adapter, const QuantSpec& spec, QuantMethod method) {
  LoraAdapter out(adapter.id(), adapter.tenant());
  for (const auto& [target, module] : adapter.modules()) out.add(target, quantize_lora(module, spec, method));
  return out;
}

}  // namespace persona
