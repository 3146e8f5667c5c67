// The persona model file on the loader's side: load_model_file reads one into Model::Weights. Internal to
// the library; the format is in docs/formats.md, the writer is convert_model (model_file.cpp).
#pragma once

#include "model/model_weights.hpp"

#include <filesystem>

namespace persona::detail {

void load_model_file(Model::Weights& w, const std::filesystem::path& path, const ModelLoadOptions& options);

}  // namespace persona::detail
