#include "model/hf_weight_source.hpp"

#include "persona/core/error.hpp"
#include "persona/quant/quantize.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <charconv>

namespace persona::detail {
namespace {

constexpr const char* kFunction = "Model::load";

// Where an expert's projection lives in transformers 5's fused layout: "<prefix><block>experts.<e>.<p>.weight"
// -> "<prefix>mlp.experts.gate_up_proj" ([E, 2F, H], gate rows first) or "<prefix>mlp.experts.down_proj".
struct FusedLocation {
  std::string tensor;
  std::size_t expert;
  int projection;  // 0 gate, 1 up, 2 down
};

std::optional<FusedLocation> fused_location(std::string_view name) {
  for (const std::string_view block : {"mlp.experts.", "block_sparse_moe.experts."}) {
    const std::size_t at = name.find(block);
    if (at == std::string_view::npos || !name.ends_with(".weight")) continue;
    const std::string_view prefix = name.substr(0, at), rest = name.substr(at + block.size());
    std::size_t expert = 0;
    const auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), expert);
    if (ec != std::errc() || end == rest.data() || *end != '.') continue;
    const std::string_view projection(end + 1, rest.data() + rest.size() - std::string_view(".weight").size());
    int p = -1;
    if (projection == "gate_proj" || projection == "w1") p = 0;
    if (projection == "up_proj" || projection == "w3") p = 1;
    if (projection == "down_proj" || projection == "w2") p = 2;
    if (p < 0) continue;
    return FusedLocation{std::string(prefix) + (p == 2 ? "mlp.experts.down_proj" : "mlp.experts.gate_up_proj"), expert,
                         p};
  }
  return std::nullopt;
}

}  // namespace

const SafetensorsTensor& HfWeightSource::checked(const std::string& name, const std::vector<std::size_t>& shape) {
  if (!checkpoint_.contains(name)) {
    PERSONA_THROW_AT(kFunction, corrupt_data, "{}: tensor '{}' is missing (expected shape [{}])",
                     checkpoint_.folder().string(), name, fmt::join(shape, ", "));
  }
  const SafetensorsTensor& t = checkpoint_.tensor(name);
  if (t.shape != shape) {
    PERSONA_THROW_AT(kFunction, shape_mismatch, "{}: tensor '{}' in {} has shape [{}]; config.json implies [{}]",
                     checkpoint_.folder().string(), name, checkpoint_.file_of(name), fmt::join(t.shape, ", "),
                     fmt::join(shape, ", "));
  }
  if (t.dtype != SafetensorsDType::F32 && t.dtype != SafetensorsDType::F16 && t.dtype != SafetensorsDType::BF16) {
    PERSONA_THROW_AT(kFunction, corrupt_data, "{}: tensor '{}' in {} is {}; expected F32, F16 or BF16",
                     checkpoint_.folder().string(), name, checkpoint_.file_of(name), to_string(t.dtype));
  }
  read_.insert(name);
  return t;
}

Tensor<float> HfWeightSource::tensor(const std::string& name, const std::vector<std::size_t>& shape) {
  // A fused checkpoint keeps Mixtral's router where transformers 5 does: mlp.gate.
  std::string actual = name;
  if (const std::size_t at = name.find("block_sparse_moe.gate.weight");
      at != std::string::npos && !checkpoint_.contains(name)) {
    actual = name.substr(0, at) + "mlp.gate.weight";
  }
  (void)checked(actual, shape);
  return copied(actual);
}

Tensor<float> HfWeightSource::copied(const std::string& name) const {
  Tensor<float> t = checkpoint_.read_f32(name);
  // The f32 copy is what the model keeps (or quantizes): the file's pages need not stay resident.
  checkpoint_.release_pages(name);
  return t;
}

WeightMatrix HfWeightSource::slice(const std::string& name, const std::vector<std::size_t>& shape, std::size_t index,
                                   std::size_t first, std::size_t rows, WeightFormat format) {
  const SafetensorsTensor& t = checked(name, shape);
  const std::size_t cols = shape.back(), per_matrix = shape.size() == 3 ? shape[1] : shape[0];
  const std::size_t offset = (index * per_matrix + first) * cols;
  if (format == WeightFormat::bf16 && t.dtype == SafetensorsDType::BF16) {
    return WeightMatrix(
        Bf16Matrix(t.data.subspan(offset * 2, rows * cols * 2), rows, cols, checkpoint_.owner_of(name)));
  }
  if (cached_name_ != name) {
    cached_ = copied(name);
    cached_name_ = name;
  }
  Tensor<float> w({rows, cols});
  std::copy_n(cached_.data() + offset, rows * cols, w.data());
  if (format == WeightFormat::bf16) return WeightMatrix(Bf16Matrix::from_f32(w));
  if (format == WeightFormat::f32) return WeightMatrix(std::move(w));
  return convert(std::move(w), name);
}

WeightMatrix HfWeightSource::matrix(const std::string& name, std::size_t rows, std::size_t cols) {
  if (!checkpoint_.contains(name)) {
    if (const std::optional<FusedLocation> fused = fused_location(name); fused && checkpoint_.contains(fused->tensor)) {
      const std::vector<std::size_t>& shape = checkpoint_.tensor(fused->tensor).shape;
      const std::size_t experts = shape.empty() ? 0 : shape[0];
      PERSONA_CHECK_AT(kFunction, shape_mismatch, fused->expert < experts,
                       "{}: tensor '{}' has shape [{}]: no expert {} for '{}'", checkpoint_.folder().string(),
                       fused->tensor, fmt::join(shape, ", "), fused->expert, name);
      if (fused->projection == 2) return slice(fused->tensor, {experts, rows, cols}, fused->expert, 0, rows, format_);
      return slice(fused->tensor, {experts, 2 * rows, cols}, fused->expert, fused->projection == 0 ? 0 : rows, rows,
                   format_);
    }
  }
  return slice(name, {rows, cols}, 0, 0, rows, format_);
}

WeightMatrix HfWeightSource::embedding(const std::string& name, std::size_t rows, std::size_t cols) {
  return slice(name, {rows, cols}, 0, 0, rows, format_ == WeightFormat::f32 ? WeightFormat::f32 : WeightFormat::bf16);
}

std::optional<WeightMatrix> HfWeightSource::tied_lm_head(std::size_t rows, std::size_t cols) {
  // Some tied checkpoints store the copy too; transformers ties it to the embedding regardless.
  if (checkpoint_.contains("lm_head.weight")) read_.insert("lm_head.weight");
  if (format_ != WeightFormat::int8 && format_ != WeightFormat::int4) return std::nullopt;
  (void)checked("model.embed_tokens.weight", {rows, cols});
  return convert(copied("model.embed_tokens.weight"), "model.embed_tokens.weight");
}

WeightMatrix HfWeightSource::convert(Tensor<float> w, std::string_view name) const {
  if (format_ == WeightFormat::f32) return WeightMatrix(std::move(w));
  if (format_ == WeightFormat::bf16) return WeightMatrix(Bf16Matrix::from_f32(w));
  const int bits = format_ == WeightFormat::int8 ? 8 : 4;
  for (const std::size_t group : {32u, 16u, 8u}) {
    if (w.dim(1) % group != 0 || group % tile_traits(bits).columns_per_tile != 0) continue;
    return WeightMatrix(quantize(w, QuantSpec{bits, group}));
  }
  PERSONA_THROW_AT(kFunction, unsupported,
                   "{}: tensor '{}' has {} inputs, not a multiple of 8: it cannot be held as int{}",
                   checkpoint_.folder().string(), name, w.dim(1), bits);
}

void HfWeightSource::finish() {
  std::vector<std::string> extra;
  for (const std::string& name : checkpoint_.names()) {
    // transformers' rotary inv_freq buffers, which older checkpoints carry, are not weights.
    if (read_.contains(name) || name.ends_with(".rotary_emb.inv_freq")) continue;
    extra.push_back(name);
  }
  if (extra.empty()) return;
  const std::size_t shown = std::min<std::size_t>(extra.size(), 5);
  PERSONA_THROW_AT(kFunction, corrupt_data,
                   "{}: {} tensor(s) are not part of the architecture config.json describes: {}{}",
                   checkpoint_.folder().string(), extra.size(),
                   fmt::join(std::vector<std::string>(extra.begin(), extra.begin() + shown), ", "),
                   extra.size() > shown ? ", ..." : "");
}

}  // namespace persona::detail
