#include "persona/quant/quantized_matrix.hpp"

#include "persona/core/error.hpp"
#include "quant/quant_layout.hpp"

#include <algorithm>

namespace persona {

QuantizedPlaneSizes QuantizedMatrix::plane_sizes(std::size_t rows, std::size_t cols, const QuantSpec& spec) {
  spec.validate();
  PERSONA_CHECK_CODE(shape_mismatch, cols % spec.group_size == 0,
                     "cols = {} is not a multiple of the group size {} ({} is the nearest multiple above)", cols,
                     spec.group_size, (cols / spec.group_size + 1) * spec.group_size);
  // Every product and sum checked: sizes from a file must not wrap to a small allocation.
  const std::size_t panels = rows / kPanelRows + (rows % kPanelRows != 0 ? 1 : 0);
  const std::size_t tiles = cols / tile_traits(spec.bits).columns_per_tile;
  std::size_t codes = 0, params = 0;
  bool overflow = __builtin_mul_overflow(panels, tiles, &codes) || __builtin_mul_overflow(codes, kTileBytes, &codes);
  overflow = overflow || __builtin_mul_overflow(panels, cols / spec.group_size, &params) ||
             __builtin_mul_overflow(params, kPanelRows * size_of(spec.scale_type), &params) ||
             __builtin_add_overflow(params, kTileBytes - 1, &params);
  params = params / kTileBytes * kTileBytes;  // keep each plane 64-byte aligned
  QuantizedPlaneSizes sizes{codes, params, spec.symmetric ? 0 : params};
  std::size_t total = 0;
  overflow = overflow || __builtin_add_overflow(sizes.codes, sizes.scales, &total) ||
             __builtin_add_overflow(total, sizes.minima, &total);
  PERSONA_CHECK_CODE(out_of_range, !overflow, "a [{}, {}] matrix in {} needs more bytes than size_t holds", rows, cols,
                     spec.to_string());
  return sizes;
}

QuantizedMatrix::QuantizedMatrix(std::size_t rows, std::size_t cols, const QuantSpec& spec)
    : rows_(rows), cols_(cols), spec_(spec) {
  const QuantizedPlaneSizes sizes = plane_sizes(rows, cols, spec);
  codes_bytes_ = sizes.codes;
  params_bytes_ = sizes.scales;
  storage_ = Tensor<std::uint8_t>({sizes.codes + sizes.scales + sizes.minima});
}

QuantizedMatrix QuantizedMatrix::view(std::size_t rows, std::size_t cols, const QuantSpec& spec,
                                      std::span<const std::uint8_t> codes, std::span<const std::uint8_t> scales,
                                      std::span<const std::uint8_t> minima, std::shared_ptr<const void> owner) {
  const QuantizedPlaneSizes sizes = plane_sizes(rows, cols, spec);
  PERSONA_CHECK_CODE(
      shape_mismatch, codes.size() == sizes.codes && scales.size() == sizes.scales && minima.size() == sizes.minima,
      "a [{}, {}] matrix in {} has planes of {}, {} and {} bytes, not {}, {} and {}", rows, cols, spec.to_string(),
      sizes.codes, sizes.scales, sizes.minima, codes.size(), scales.size(), minima.size());
  PERSONA_CHECK_CODE(invalid_argument, owner != nullptr, "a view needs an owner that keeps its planes alive");
  for (const std::uint8_t* p : {codes.data(), scales.data(), minima.data()}) {
    PERSONA_CHECK_CODE(invalid_argument, p == nullptr || reinterpret_cast<std::uintptr_t>(p) % kTileBytes == 0,
                       "a plane at {} is not {}-byte aligned", static_cast<const void*>(p), kTileBytes);
  }
  QuantizedMatrix m;
  m.rows_ = rows;
  m.cols_ = cols;
  m.spec_ = spec;
  m.codes_bytes_ = sizes.codes;
  m.params_bytes_ = sizes.scales;
  m.view_[0] = codes.data();
  m.view_[1] = scales.data();
  m.view_[2] = minima.data();
  m.owner_ = std::move(owner);
  return m;
}

std::uint8_t* QuantizedMatrix::own() {
  if (owner_) {
    Tensor<std::uint8_t> storage({bytes()});
    std::copy_n(view_[0], codes_bytes_, storage.data());
    std::copy_n(view_[1], params_bytes_, storage.data() + codes_bytes_);
    if (minima_bytes() != 0) std::copy_n(view_[2], minima_bytes(), storage.data() + codes_bytes_ + params_bytes_);
    storage_ = std::move(storage);
    owner_.reset();
    std::fill(std::begin(view_), std::end(view_), nullptr);
  }
  return storage_.data();
}

std::uint8_t QuantizedMatrix::code(std::size_t row, std::size_t col) const noexcept {
  return detail::read_code(plane(0), tiles_per_panel(), spec_.bits, row, col);
}

void QuantizedMatrix::set_code(std::size_t row, std::size_t col, std::uint8_t code) {
  detail::write_code(own(), tiles_per_panel(), spec_.bits, row, col, code);
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

void QuantizedMatrix::set_scale(std::size_t row, std::size_t group, float value) {
  detail::write_param(scales().data(), spec_.scale_type, param_index(row, group), value);
}

void QuantizedMatrix::set_minimum(std::size_t row, std::size_t group, float value) {
  PERSONA_CHECK(!spec_.symmetric, "{} stores no minima: set_minimum needs an asymmetric spec", spec_.to_string());
  detail::write_param(minima().data(), spec_.scale_type, param_index(row, group), value);
}

}  // namespace persona
