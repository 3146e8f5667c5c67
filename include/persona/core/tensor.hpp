// Tensor<T> (owning, 64-byte aligned, row-major, rank 0..4) and TensorView<T> (non-owning pointer +
// shape + strides in elements); Eigen interop is opt-in (persona/core/eigen.hpp). Constructors validate what they are
// given (overflowing sizes, null data, strides that reach past the buffer); element access does not.
#pragma once

#include "persona/core/dtype.hpp"
#include "persona/core/error.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <type_traits>

namespace persona {

inline constexpr std::size_t kMaxRank = 4;
inline constexpr std::size_t kTensorAlignment = 64;

// Up to kMaxRank extents (or strides), row-major order.
class Shape {
 public:
  constexpr Shape() = default;
  Shape(std::initializer_list<std::size_t> dims) {
    PERSONA_CHECK(dims.size() <= kMaxRank, "rank {} exceeds the maximum rank {}", dims.size(), kMaxRank);
    rank_ = dims.size();
    std::copy(dims.begin(), dims.end(), dims_.begin());
  }
  static Shape of_rank(std::size_t rank) {
    PERSONA_CHECK(rank <= kMaxRank, "rank {} exceeds the maximum rank {}", rank, kMaxRank);
    Shape s;
    s.rank_ = rank;
    return s;
  }

  constexpr std::size_t rank() const noexcept { return rank_; }
  constexpr std::size_t operator[](std::size_t i) const noexcept { return dims_[i]; }
  constexpr std::size_t& operator[](std::size_t i) noexcept { return dims_[i]; }
  constexpr std::span<const std::size_t> dims() const noexcept { return {dims_.data(), rank_}; }

  // Product of the extents; Error(out_of_range) if it overflows size_t.
  std::size_t numel() const {
    std::size_t n = 1;
    for (std::size_t i = 0; i < rank_; ++i) {
      PERSONA_CHECK_CODE(out_of_range, !__builtin_mul_overflow(n, dims_[i], &n), "element count of shape {} overflows",
                         to_string());
    }
    return n;
  }

  std::string to_string() const;  // "[2, 3]"

  friend bool operator==(const Shape& a, const Shape& b) noexcept {
    return a.rank_ == b.rank_ && std::equal(a.dims_.begin(), a.dims_.begin() + a.rank_, b.dims_.begin());
  }

 private:
  std::array<std::size_t, kMaxRank> dims_{};
  std::size_t rank_ = 0;
};

// Row-major contiguous strides for `shape`.
inline Shape contiguous_strides(const Shape& shape) {
  Shape strides = Shape::of_rank(shape.rank());
  std::size_t stride = 1;
  for (std::size_t i = shape.rank(); i-- > 0;) {
    strides[i] = stride;
    stride *= shape[i];
  }
  return strides;
}

template <class T>
class TensorView {
 public:
  using value_type = std::remove_const_t<T>;

  TensorView() = default;

  // A contiguous row-major view. Null data with a non-empty shape is an Error.
  TensorView(T* data, Shape shape) : data_(data), shape_(shape), strides_(contiguous_strides(shape)) {
    const std::size_t n = shape_.numel();
    PERSONA_CHECK(data != nullptr || n == 0, "null data pointer for a non-empty shape {}", shape_.to_string());
    std::size_t bytes = 0;
    PERSONA_CHECK_CODE(out_of_range, !__builtin_mul_overflow(n, sizeof(T), &bytes), "byte size of shape {} overflows",
                       shape_.to_string());
  }

  // A strided view into a buffer of `capacity` elements; every element the view can reach must lie
  // inside the buffer (Error out_of_range otherwise).
  TensorView(T* data, Shape shape, Shape strides, std::size_t capacity)
      : data_(data), shape_(shape), strides_(strides) {
    PERSONA_CHECK_CODE(shape_mismatch, strides.rank() == shape.rank(),
                       "strides {} have rank {} but shape {} has rank {}", strides.to_string(), strides.rank(),
                       shape.to_string(), shape.rank());
    const std::size_t n = shape_.numel();
    if (n == 0) return;
    PERSONA_CHECK(data != nullptr, "null data pointer for a non-empty shape {}", shape_.to_string());
    std::size_t last = 0;  // offset of the last reachable element
    for (std::size_t i = 0; i < shape.rank(); ++i) {
      std::size_t step = 0;
      PERSONA_CHECK_CODE(
          out_of_range,
          !__builtin_mul_overflow(shape[i] - 1, strides[i], &step) && !__builtin_add_overflow(last, step, &last),
          "strides {} with shape {} overflow", strides.to_string(), shape.to_string());
    }
    PERSONA_CHECK_CODE(out_of_range, last < capacity,
                       "shape {} with strides {} reaches element {} but the buffer holds {}", shape.to_string(),
                       strides.to_string(), last, capacity);
  }

  // A view of const elements from a view of mutable ones.
  operator TensorView<const T>() const noexcept  // NOLINT(google-explicit-constructor)
      requires(!std::is_const_v<T>) {
    return TensorView<const T>(data_, shape_, strides_, typename TensorView<const T>::unchecked_tag{});
  }

  T* data() const noexcept { return data_; }
  const Shape& shape() const noexcept { return shape_; }
  const Shape& strides() const noexcept { return strides_; }
  std::size_t rank() const noexcept { return shape_.rank(); }
  std::size_t dim(std::size_t i) const noexcept { return shape_[i]; }
  std::size_t stride(std::size_t i) const noexcept { return strides_[i]; }
  std::size_t numel() const noexcept {
    std::size_t n = 1;
    for (std::size_t d : shape_.dims()) n *= d;  // validated at construction
    return n;
  }
  bool empty() const noexcept { return numel() == 0; }
  bool is_contiguous() const noexcept {
    std::size_t expected = 1;
    for (std::size_t i = shape_.rank(); i-- > 0;) {
      if (shape_[i] != 1 && strides_[i] != expected) return false;
      expected *= shape_[i];
    }
    return true;
  }

  // Unchecked element access (debug builds assert).
  T& operator()(std::size_t i) const noexcept { return data_[offset({i})]; }
  T& operator()(std::size_t i, std::size_t j) const noexcept { return data_[offset({i, j})]; }
  T& operator()(std::size_t i, std::size_t j, std::size_t k) const noexcept { return data_[offset({i, j, k})]; }
  T& operator()(std::size_t i, std::size_t j, std::size_t k, std::size_t l) const noexcept {
    return data_[offset({i, j, k, l})];
  }

  // Checked element access: Error(out_of_range) naming the index and the shape.
  template <class... I>
  T& at(I... index) const {
    const std::array<std::size_t, sizeof...(I)> idx{static_cast<std::size_t>(index)...};
    PERSONA_CHECK_CODE(shape_mismatch, idx.size() == rank(), "{} indices given for a tensor of rank {}", idx.size(),
                       rank());
    for (std::size_t d = 0; d < idx.size(); ++d) {
      PERSONA_CHECK_CODE(out_of_range, idx[d] < shape_[d], "index {} on dimension {} is outside shape {}", idx[d], d,
                         shape_.to_string());
    }
    return (*this)(index...);
  }

  // Rows [begin, end) along dimension 0, same rank.
  TensorView rows(std::size_t begin, std::size_t end) const {
    PERSONA_CHECK(rank() >= 1, "rows() needs rank >= 1");
    PERSONA_CHECK_CODE(out_of_range, begin <= end && end <= shape_[0],
                       "row range [{}, {}) is outside the {} rows of shape {}", begin, end, shape_[0],
                       shape_.to_string());
    Shape shape = shape_;
    shape[0] = end - begin;
    return TensorView(begin == end ? data_ : data_ + begin * strides_[0], shape, strides_, unchecked_tag{});
  }

  // Row i along dimension 0, rank reduced by one.
  TensorView row(std::size_t i) const {
    PERSONA_CHECK(rank() >= 1, "row() needs rank >= 1");
    PERSONA_CHECK_CODE(out_of_range, i < shape_[0], "row {} is outside the {} rows of shape {}", i, shape_[0],
                       shape_.to_string());
    Shape shape = Shape::of_rank(rank() - 1);
    Shape strides = Shape::of_rank(rank() - 1);
    for (std::size_t d = 1; d < rank(); ++d) {
      shape[d - 1] = shape_[d];
      strides[d - 1] = strides_[d];
    }
    return TensorView(data_ + i * strides_[0], shape, strides, unchecked_tag{});
  }

  // The elements as a span; Error unless the view is contiguous.
  std::span<T> span() const {
    PERSONA_CHECK(is_contiguous(), "span() needs a contiguous view, shape {} strides {}", shape_.to_string(),
                  strides_.to_string());
    return {data_, numel()};
  }

 private:
  template <class U>
  friend class TensorView;
  template <class U>
  friend class Tensor;
  struct unchecked_tag {};
  TensorView(T* data, Shape shape, Shape strides, unchecked_tag) noexcept
      : data_(data), shape_(shape), strides_(strides) {}

  std::size_t offset(std::initializer_list<std::size_t> index) const noexcept {
    PERSONA_ASSERT(index.size() == rank());
    std::size_t off = 0, d = 0;
    for (std::size_t i : index) {
      PERSONA_ASSERT(i < shape_[d]);
      off += i * strides_[d++];
    }
    return off;
  }

  T* data_ = nullptr;
  Shape shape_ = Shape{0};  // a default view is empty, not a rank-0 scalar without storage
  Shape strides_ = Shape{1};
};

namespace detail {
struct AlignedFree {
  void operator()(void* p) const noexcept { std::free(p); }
};
}  // namespace detail

// Owning, zero-initialized, 64-byte aligned, contiguous row-major storage.
template <class T>
class Tensor {
  static_assert(std::is_trivially_copyable_v<T>, "Tensor holds trivially copyable elements");

 public:
  Tensor() = default;
  explicit Tensor(Shape shape) : shape_(shape) {
    const std::size_t n = shape_.numel();
    std::size_t bytes = 0;
    PERSONA_CHECK_CODE(out_of_range, !__builtin_mul_overflow(n, sizeof(T), &bytes) && bytes <= (SIZE_MAX >> 1),
                       "byte size of shape {} overflows", shape_.to_string());
    if (n == 0) return;
    bytes = (bytes + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment;
    void* p = std::aligned_alloc(kTensorAlignment, bytes);
    PERSONA_CHECK_CODE(capacity_exhausted, p != nullptr, "cannot allocate {} bytes for shape {}", bytes,
                       shape_.to_string());
    std::memset(p, 0, bytes);
    data_.reset(static_cast<T*>(p));
  }
  Tensor(std::initializer_list<std::size_t> dims) : Tensor(Shape(dims)) {}

  Tensor(const Tensor& other) : Tensor(other.shape_) { std::copy_n(other.data(), numel(), data()); }
  Tensor& operator=(const Tensor& other) {
    if (this != &other) *this = Tensor(other);
    return *this;
  }
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;

  T* data() noexcept { return data_.get(); }
  const T* data() const noexcept { return data_.get(); }
  const Shape& shape() const noexcept { return shape_; }
  std::size_t rank() const noexcept { return shape_.rank(); }
  std::size_t dim(std::size_t i) const noexcept { return shape_[i]; }
  std::size_t numel() const noexcept { return view().numel(); }
  bool empty() const noexcept { return numel() == 0; }

  TensorView<T> view() noexcept {
    return TensorView<T>(data(), shape_, contiguous_strides(shape_), typename TensorView<T>::unchecked_tag{});
  }
  TensorView<const T> view() const noexcept {
    return TensorView<const T>(data(), shape_, contiguous_strides(shape_),
                               typename TensorView<const T>::unchecked_tag{});
  }
  operator TensorView<T>() noexcept { return view(); }              // NOLINT(google-explicit-constructor)
  operator TensorView<const T>() const noexcept { return view(); }  // NOLINT(google-explicit-constructor)
  std::span<T> span() noexcept { return {data(), numel()}; }
  std::span<const T> span() const noexcept { return {data(), numel()}; }

  template <class... I>
  T& operator()(I... index) noexcept {
    return view()(static_cast<std::size_t>(index)...);
  }
  template <class... I>
  const T& operator()(I... index) const noexcept {
    return view()(static_cast<std::size_t>(index)...);
  }

 private:
  std::unique_ptr<T[], detail::AlignedFree> data_;
  Shape shape_ = Shape{0};  // a default tensor is empty, not a rank-0 scalar without storage
};

}  // namespace persona
