// QuantizedMatrix: a [rows, cols] weight matrix in a QuantSpec, stored as three planes, each 64-byte
// aligned: codes in row panels of 64-byte tiles, then per-group scales, then per-group minima (asymmetric
// specs only). Rows are output features, columns the input dimension (the torch.nn.Linear layout).
#pragma once

#include "persona/core/tensor.hpp"
#include "persona/quant/quant_spec.hpp"

#include <cstddef>
#include <cstdint>
#include <span>

namespace persona {

// The bytes of each plane of a QuantizedMatrix (minima is 0 for symmetric specs).
struct QuantizedPlaneSizes {
  std::size_t codes = 0, scales = 0, minima = 0;
};

class QuantizedMatrix {
 public:
  QuantizedMatrix() = default;
  // All codes, scales and minima zero. Error if the spec is invalid, cols is not a multiple of the
  // group size, or the planes' sizes overflow size_t (out_of_range).
  QuantizedMatrix(std::size_t rows, std::size_t cols, const QuantSpec& spec);

  // The planes' sizes a [rows, cols] matrix in `spec` would have, checked as the constructor checks them
  // but without allocating: a reader compares a file's planes with these before building the matrix.
  static QuantizedPlaneSizes plane_sizes(std::size_t rows, std::size_t cols, const QuantSpec& spec);

  std::size_t rows() const noexcept { return rows_; }
  std::size_t cols() const noexcept { return cols_; }
  const QuantSpec& spec() const noexcept { return spec_; }
  std::size_t panels() const noexcept { return (rows_ + kPanelRows - 1) / kPanelRows; }
  std::size_t groups_per_row() const noexcept { return cols_ / spec_.group_size; }
  std::size_t tiles_per_panel() const noexcept { return cols_ / tile_traits(spec_.bits).columns_per_tile; }

  // The planes, for kernels and file formats. Shapes (in elements of the stored type):
  //   codes:   [panels, tiles_per_panel, 64] bytes
  //   scales:  [panels, groups_per_row, kPanelRows] of spec().scale_type
  //   minima:  the same shape as scales; empty for symmetric specs
  std::span<const std::uint8_t> codes() const noexcept { return {storage_.data(), codes_bytes_}; }
  std::span<std::uint8_t> codes() noexcept { return {storage_.data(), codes_bytes_}; }
  std::span<const std::uint8_t> scales() const noexcept { return {storage_.data() + codes_bytes_, params_bytes_}; }
  std::span<std::uint8_t> scales() noexcept { return {storage_.data() + codes_bytes_, params_bytes_}; }
  std::span<const std::uint8_t> minima() const noexcept {
    return {storage_.data() + codes_bytes_ + params_bytes_, spec_.symmetric ? 0 : params_bytes_};
  }
  std::span<std::uint8_t> minima() noexcept {
    return {storage_.data() + codes_bytes_ + params_bytes_, spec_.symmetric ? 0 : params_bytes_};
  }
  std::size_t bytes() const noexcept { return storage_.numel(); }

  // Element access for tests, file formats and the scalar references (slow; unchecked).
  std::uint8_t code(std::size_t row, std::size_t col) const noexcept;
  void set_code(std::size_t row, std::size_t col, std::uint8_t code) noexcept;
  float scale(std::size_t row, std::size_t group) const noexcept;
  float minimum(std::size_t row, std::size_t group) const noexcept;  // the effective minimum (see QuantCodebook)
  void set_scale(std::size_t row, std::size_t group, float value) noexcept;
  void set_minimum(std::size_t row, std::size_t group, float value);  // Error for symmetric specs

 private:
  std::size_t param_index(std::size_t row, std::size_t group) const noexcept;

  std::size_t rows_ = 0, cols_ = 0;
  QuantSpec spec_;
  std::size_t codes_bytes_ = 0, params_bytes_ = 0;
  Tensor<std::uint8_t> storage_;
};

}  // namespace persona
