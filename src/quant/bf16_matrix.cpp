#include "persona/quant/bf16_matrix.hpp"

#include "core/kernels/core_kernel_table.hpp"
#include "persona/core/dtype.hpp"
#include "persona/core/error.hpp"
#include "persona/core/threading.hpp"
#include "quant/kernels/quant_kernel_table.hpp"

#include <cstring>

namespace persona {
namespace {

// Weight rows per task: fixed, so that the result never depends on the thread count.
constexpr std::size_t kRowBlock = 64;

void check(TensorView<const float> x, const Bf16Matrix& w, TensorView<float> y, const char* function) {
  PERSONA_CHECK_AT(
      function, shape_mismatch,
      x.rank() == 2 && y.rank() == 2 && x.dim(1) == w.cols() && y.dim(1) == w.rows() && x.dim(0) == y.dim(0),
      "x {} and y {} do not fit a [{}, {}] weight: expected [m, {}] and [m, {}]", x.shape().to_string(),
      y.shape().to_string(), w.rows(), w.cols(), w.cols(), w.rows());
  PERSONA_CHECK_AT(
      function, invalid_argument, (x.dim(1) <= 1 || x.stride(1) == 1) && (y.dim(1) <= 1 || y.stride(1) == 1),
      "x and y must have contiguous rows, got strides {} and {}", x.strides().to_string(), y.strides().to_string());
}

detail::Bf16ProductArgs args_of(TensorView<const float> x, const Bf16Matrix& w, TensorView<float> y) {
  return {w.data(),
          w.cols(),
          x.data(),
          x.dim(0) > 1 ? x.stride(0) : w.cols(),
          x.dim(0),
          y.data(),
          y.dim(0) > 1 ? y.stride(0) : w.rows(),
          0,
          w.rows()};
}

}  // namespace

Bf16Matrix::Bf16Matrix(const Bf16Matrix& other)
    : rows_(other.rows_), cols_(other.cols_), owned_(other.owned_), owner_(other.owner_) {
  data_ = owned_.empty() ? other.data_ : owned_.data();
}

Bf16Matrix& Bf16Matrix::operator=(const Bf16Matrix& other) {
  if (this != &other) *this = Bf16Matrix(other);
  return *this;
}

Bf16Matrix Bf16Matrix::from_f32(TensorView<const float> w) {
  PERSONA_CHECK_CODE(shape_mismatch, w.rank() == 2, "a weight matrix must have rank 2, got shape {}",
                     w.shape().to_string());
  Bf16Matrix m;
  m.rows_ = w.dim(0);
  m.cols_ = w.dim(1);
  m.owned_.resize(m.rows_ * m.cols_);
  for (std::size_t r = 0; r < m.rows_; ++r) {
    const float* row = w.data() + r * w.stride(0);
    for (std::size_t c = 0; c < m.cols_; ++c) m.owned_[r * m.cols_ + c] = f32_to_bf16_bits(row[c]);
  }
  m.data_ = m.owned_.data();
  return m;
}

Bf16Matrix::Bf16Matrix(std::span<const std::byte> data, std::size_t rows, std::size_t cols,
                       std::shared_ptr<const void> owner)
    : rows_(rows), cols_(cols) {
  PERSONA_CHECK_CODE(shape_mismatch, cols == 0 || (rows <= data.size() / 2 / cols && data.size() == rows * cols * 2),
                     "{} bytes of bf16 data for a [{}, {}] matrix", data.size(), rows, cols);
  if (reinterpret_cast<std::uintptr_t>(data.data()) % alignof(std::uint16_t) == 0) {
    data_ = reinterpret_cast<const std::uint16_t*>(data.data());
    owner_ = std::move(owner);
  } else {
    owned_.resize(rows * cols);
    std::memcpy(owned_.data(), data.data(), data.size());
    data_ = owned_.data();
  }
}

Tensor<float> Bf16Matrix::to_f32() const {
  Tensor<float> t({rows_, cols_});
  for (std::size_t i = 0; i < rows_ * cols_; ++i) t.data()[i] = bf16_bits_to_f32(data_[i]);
  return t;
}

void Bf16Matrix::row_f32(std::size_t r, std::span<float> out) const {
  PERSONA_CHECK_CODE(out_of_range, r < rows_ && out.size() == cols_, "row {} of {} into {} floats (cols {})", r, rows_,
                     out.size(), cols_);
  for (std::size_t c = 0; c < cols_; ++c) out[c] = bf16_bits_to_f32(data_[r * cols_ + c]);
}

void bf16_matmul(TensorView<const float> x, const Bf16Matrix& w, TensorView<float> y) {
  check(x, w, y, "bf16_matmul");
  if (x.dim(0) == 0 || w.rows() == 0) return;
  const detail::Bf16ProductArgs base = args_of(x, w, y);
  const std::size_t blocks = (w.rows() + kRowBlock - 1) / kRowBlock;
  if (x.dim(0) <= kBf16DirectRows) {
    const detail::QuantKernelTable& kernels = detail::quant_kernels(active_isa_level());
    parallel_for(blocks, 1, [&](std::size_t begin, std::size_t end) {
      detail::Bf16ProductArgs a = base;
      a.row_begin = begin * kRowBlock;
      a.row_end = std::min(w.rows(), end * kRowBlock);
      kernels.product_bf16(a);
    });
    return;
  }
  // Many rows of x (prefill): widen a block of W once and let the f32 GEMM reuse it across them.
  const detail::CoreKernelTable& core = detail::core_kernels();
  parallel_for(blocks, 1, [&](std::size_t begin, std::size_t end) {
    thread_local std::vector<float> tile;
    for (std::size_t b = begin; b < end; ++b) {
      const std::size_t first = b * kRowBlock, n = std::min(kRowBlock, w.rows() - first);
      tile.resize(n * w.cols());
      for (std::size_t i = 0; i < n * w.cols(); ++i) tile[i] = bf16_bits_to_f32(w.data()[first * w.cols() + i]);
      detail::MatmulArgs m{};
      m.a = x.data();
      m.b = tile.data();
      m.c = y.data() + first;
      m.m = x.dim(0);
      m.n = n;
      m.k = w.cols();
      m.lda = base.ldx;
      m.ldb = w.cols();
      m.ldc = base.ldy;
      m.b_transposed = true;
      core.matmul(m);
    }
  });
}

void bf16_matmul_ref(TensorView<const float> x, const Bf16Matrix& w, TensorView<float> y) {
  check(x, w, y, "bf16_matmul_ref");
  if (x.dim(0) == 0 || w.rows() == 0) return;
  detail::reference_quant_kernels().product_bf16(args_of(x, w, y));
}

}  // namespace persona
