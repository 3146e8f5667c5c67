// The persona model file: a Hugging Face model converted once into the weight format it is served in
// (int4, int8, bf16 or f32), so that a 7B model is not quantized again at every start. A safetensors
// container with config.json inside, every byte checksummed; Model::load maps it (docs/formats.md).
#pragma once

#include "persona/model/model.hpp"

#include <cstddef>
#include <filesystem>

namespace persona {

struct ModelConversion {
  WeightFormat format = WeightFormat::f32;
  std::size_t input_bytes = 0;   // of the checkpoint's tensors
  std::size_t output_bytes = 0;  // of the file written
};

// Loads the Hugging Face folder `folder` as Model::load does with `format` (every check included), writes
// the model file `out` atomically, and reads it back. The file is built in memory before it is written:
// the conversion needs about twice the output's size in RAM beyond the loaded model.
ModelConversion convert_model(const std::filesystem::path& folder, const std::filesystem::path& out,
                              WeightFormat format);

}  // namespace persona
