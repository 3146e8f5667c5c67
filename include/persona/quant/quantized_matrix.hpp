// QuantizedMatrix: a [rows, cols] weight matrix in a QuantSpec, stored as three planes, each 64-byte
// aligned: codes in row panels of 64-byte tiles, then per-group scales, then per-group minima (asymmetric
// specs only). Rows are output features, columns the input dimension (the torch.nn.Linear layout).
#pragma once

#include "persona/core/tensor.hpp"
#include "persona/quant/quant_spec.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
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

  // A matrix whose planes stay where they are (a mapped file's bytes), kept alive by `owner`: nothing is
  // copied. Error(shape_mismatch) unless each plane has the size plane_sizes gives (minima empty for
  // symmetric specs), Error(invalid_argument) for a plane that is not 64-byte aligned or a null owner.
  // The mutable accessors below copy a view into storage of its own first.
  static QuantizedMatrix view(std::size_t rows, std::size_t cols, const QuantSpec& spec,
                              std::span<const std::uint8_t> codes, std::span<const std::uint8_t> scales,
                              std::span<const std::uint8_t> minima, std::shared_ptr<const void> owner);
  bool in_place() const noexcept { return owner_ != nullptr; }

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
  std::span<const std::uint8_t> codes() const noexcept { return {plane(0), codes_bytes_}; }
  std::span<std::uint8_t> codes() { return {own() + 0, codes_bytes_}; }
  std::span<const std::uint8_t> scales() const noexcept { return {plane(1), params_bytes_}; }
  std::span<std::uint8_t> scales() { return {own() + codes_bytes_, params_bytes_}; }
  std::span<const std::uint8_t> minima() const noexcept { return {plane(2), minima_bytes()}; }
  std::span<std::uint8_t> minima() { return {own() + codes_bytes_ + params_bytes_, minima_bytes()}; }
  std::size_t bytes() const noexcept { return codes_bytes_ + params_bytes_ + minima_bytes(); }

  // Element access for tests, file formats and the scalar references (slow; unchecked).
  std::uint8_t code(std::size_t row, std::size_t col) const noexcept;
  void set_code(std::size_t row, std::size_t col, std::uint8_t code);
  float scale(std::size_t row, std::size_t group) const noexcept;
  float minimum(std::size_t row, std::size_t group) const noexcept;  // the effective minimum (see QuantCodebook)
  void set_scale(std::size_t row, std::size_t group, float value);
  void set_minimum(std::size_t row, std::size_t group, float value);  // Error for symmetric specs

 private:
  std::size_t param_index(std::size_t row, std::size_t group) const noexcept;
  std::size_t minima_bytes() const noexcept { return spec_.symmetric ? 0 : params_bytes_; }
  // Plane i (codes, scales, minima) for reading: the view's bytes, or the storage's.
  const std::uint8_t* plane(std::size_t i) const noexcept {
    if (owner_) return view_[i];
    return storage_.data() + (i == 0 ? 0 : i == 1 ? codes_bytes_ : codes_bytes_ + params_bytes_);
  }
  // The storage for writing; a view is copied into it first.
  std::uint8_t* own();

  std::size_t rows_ = 0, cols_ = 0;
  QuantSpec spec_;
  std::size_t codes_bytes_ = 0, params_bytes_ = 0;
  Tensor<std::uint8_t> storage_;
  const std::uint8_t* view_[3] = {nullptr, nullptr, nullptr};  // a view's planes
  std::shared_ptr<const void> owner_;                          // what keeps them alive; null: owned
};

}  // namespace persona
