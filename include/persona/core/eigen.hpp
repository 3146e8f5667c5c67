// Eigen interop, opt in: zero-copy Eigen::Map of a rank-2 TensorView, and a TensorView of an Eigen
// matrix or map. Only translation units that include this header pay for Eigen's headers.
#pragma once

#include "persona/core/error.hpp"
#include "persona/core/tensor.hpp"

#include <Eigen/Core>

#include <type_traits>

namespace persona {

// Zero-copy Eigen view of a rank-2 tensor view (row-major, any strides). Error shape_mismatch otherwise.
template <class T>
auto as_eigen(const TensorView<T>& view) {
  PERSONA_CHECK_CODE(shape_mismatch, view.rank() == 2, "as_eigen() needs rank 2, shape is {}",
                     view.shape().to_string());
  using Value = std::remove_const_t<T>;
  using Matrix = Eigen::Matrix<Value, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using MapType = std::conditional_t<std::is_const_v<T>, const Matrix, Matrix>;
  using Stride = Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>;
  return Eigen::Map<MapType, Eigen::Unaligned, Stride>(
      view.data(), static_cast<Eigen::Index>(view.dim(0)), static_cast<Eigen::Index>(view.dim(1)),
      Stride(static_cast<Eigen::Index>(view.stride(0)), static_cast<Eigen::Index>(view.stride(1))));
}

// A view of an Eigen matrix or map (any storage order), without copying.
template <class M>
requires requires(M& m) {
  m.data();
  m.outerStride();
  m.innerStride();
}
auto view_of(M& m) {
  using T = std::remove_pointer_t<decltype(m.data())>;
  const auto rows = static_cast<std::size_t>(m.rows());
  const auto cols = static_cast<std::size_t>(m.cols());
  const auto outer = static_cast<std::size_t>(m.outerStride());
  const auto inner = static_cast<std::size_t>(m.innerStride());
  Shape strides = M::IsRowMajor ? Shape{outer, inner} : Shape{inner, outer};
  const std::size_t capacity = rows * cols == 0 ? 0 : (rows - 1) * strides[0] + (cols - 1) * strides[1] + 1;
  return TensorView<T>(m.data(), Shape{rows, cols}, strides, capacity);
}

}  // namespace persona
