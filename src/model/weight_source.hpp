// Where Model::load takes a model's weights from: a Hugging Face checkpoint (hf_weight_source.cpp) or a
// persona model file (model_file.cpp). The loader asks for every tensor by its Hugging Face name, experts
// one by one ("<prefix><block>experts.<e>.<projection>.weight", block "mlp." or Mixtral's
// "block_sparse_moe."), whatever the layout on disk; each source checks shapes and refuses leftovers.
// Internal to the library.
#pragma once

#include "model/model_weights.hpp"

#include <optional>
#include <string>
#include <vector>

namespace persona::detail {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // An f32 tensor (norms, biases, routers, the shared expert's gate) of exactly `shape`.
  virtual Tensor<float> tensor(const std::string& name, const std::vector<std::size_t>& shape) = 0;
  // A linear layer's weight [rows, cols] in the load's format.
  virtual WeightMatrix matrix(const std::string& name, std::size_t rows, std::size_t cols) = 0;
  // The embedding [vocab, hidden]: f32 with f32 weights, else bf16.
  virtual WeightMatrix embedding(const std::string& name, std::size_t rows, std::size_t cols) = 0;
  // A tied model's output projection: none for f32 and bf16 (the embedding serves), a quantized copy of
  // the embedding for int8 and int4.
  virtual std::optional<WeightMatrix> tied_lm_head(std::size_t rows, std::size_t cols) = 0;
  // After the last tensor: Error naming what the source holds that the model did not read.
  virtual void finish() = 0;
};

// Fills w.layers, the embedding, final norm and lm_head from `source` as w.config describes.
void build_weights(Model::Weights& w, WeightSource& source);

}  // namespace persona::detail
