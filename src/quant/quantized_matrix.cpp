#include "persona/quant/quantized_matrix.hpp"

#include "persona/core/error.hpp"
#include "quant/quant_layout.hpp"

namespace persona {

QuantizedMatrix::QuantizedMatrix(std::size_t rows, std::size_t cols, const QuantSpec& spec)
    : rows_(rows), cols_(cols), spec_(spec) {
  spec.validate();
  PERSONA_CHECK_CODE(shape_mismatch, cols % spec.group_size == 0,
                     "cols = {} is not a multiple of the group size {} ({} is the nearest multiple above)", cols,
                     spec.group_size, (cols / spec.group_size + 1) * spec.group_size);
  codes_bytes_ = panels() * tiles_per_panel() * kTileBytes;
  const std::size_t param_bytes = panels() * groups_per_row() * kPanelRows * size_of(spec.scale_type);
  params_bytes_ = (param_bytes + kTileBytes - 1) / kTileBytes * kTileBytes;  // keep each plane 64-byte aligned
  storage_ = Tensor<std::uint8_t>({codes_bytes_ + params_bytes_ * (spec.symmetric ? 1 : 2)});
}

std::uint8_t QuantizedMatrix::code(std::size_t row, std::size_t col) const noexcept {
  return detail::read_code(storage_.data(), tiles_per_panel(), spec_.bits, row, col);
}

void QuantizedMatrix::set_code(std::size_t row, std::size_t col, std::uint8_t code) noexcept {
  detail::write_code(storage_.data(), tiles_per_panel(), spec_.bits, row, col, code);
}

std::size_t QuantizedMatrix::param_index(std::size_t row, std::size_t group) const noexcept {
  return detail::param_index(groups_per_row(), row, group);
}

float QuantizedMatrix::scale(std::size_t row, std::size_t group) const noexcept {
  return detail::read_param(scales().data(), spec_.scale_type, param_index(row, group));
}

float QuantizedMatrix::minimum(std::size_t row, std::size_t group) const noexcept {
  if (spec_.codebook == QuantCodebook::nf4) return 0.0f;
  if (spec_.symmetric) return -detail::symmetric_offset(spec_.bits) * scale(row, group);
  return detail::read_param(minima().data(), spec_.scale_type, param_index(row, group));
}

void QuantizedMatrix::set_scale(std::size_t row, std::size_t group, float value) noexcept {
  detail::write_param(scales().data(), spec_.scale_type, param_index(row, group), value);
}

void QuantizedMatrix::set_minimum(std::size_t row, std::size_t group, float value) {
  PERSONA_CHECK(!spec_.symmetric, "{} stores no minima: set_minimum needs an asymmetric spec", spec_.to_string());
  detail::write_param(minima().data(), spec_.scale_type, param_index(row, group), value);
}

}  // namespace persona
