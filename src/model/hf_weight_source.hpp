// The weights of a Hugging Face checkpoint folder (Checkpoint) as Model::load asks for them, converted to
// the load's format: bf16 views a bf16 file's bytes in place; int8 and int4 quantize at load. Experts
// asked for one by one are found as per-expert tensors or sliced out of transformers 5's fused
// mlp.experts.gate_up_proj / down_proj. Internal to the library.
#pragma once

#include "model/weight_source.hpp"
#include "persona/model/checkpoint.hpp"

#include <set>
#include <string>

namespace persona::detail {

class HfWeightSource final : public WeightSource {
 public:
  HfWeightSource(const Checkpoint& checkpoint, WeightFormat format) : checkpoint_(checkpoint), format_(format) {}

  Tensor<float> tensor(const std::string& name, const std::vector<std::size_t>& shape) override;
  WeightMatrix matrix(const std::string& name, std::size_t rows, std::size_t cols) override;
  WeightMatrix embedding(const std::string& name, std::size_t rows, std::size_t cols) override;
  std::optional<WeightMatrix> tied_lm_head(std::size_t rows, std::size_t cols) override;
  void finish() override;

  // f32 values in the load's format (int8 / int4 in groups of 32 inputs, or 16 or 8 where the inputs are
  // not a multiple of 32, as tiny test models' may not be).
  WeightMatrix convert(Tensor<float> w, std::string_view name) const;
  // The tensor read as f32, its file pages then released (Checkpoint::release_pages).
  Tensor<float> copied(const std::string& name) const;

 private:
  const SafetensorsTensor& checked(const std::string& name, const std::vector<std::size_t>& shape);
  // Rows [first, first + rows) of matrix `index` of the tensor `name` of `shape`, in `format`.
  WeightMatrix slice(const std::string& name, const std::vector<std::size_t>& shape, std::size_t index,
                     std::size_t first, std::size_t rows, WeightFormat format);

  const Checkpoint& checkpoint_;
  WeightFormat format_;
  std::string cached_name_;  // a fused experts tensor, read once for its 2 E or E slices
  Tensor<float> cached_;
  std::set<std::string, std::less<>> read_;
};

}  // namespace persona::detail
