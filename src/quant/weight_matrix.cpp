#include "persona/quant/weight_matrix.hpp"

#include "core/kernels/core_kernel_table.hpp"
#include "persona/core/ops.hpp"
#include "persona/quant/quantize.hpp"
#include "quant/quant_product.hpp"

namespace persona {

WeightMatrix::WeightMatrix(Tensor<float> weights) : storage_(std::move(weights)) {
  const auto& w = std::get<Tensor<float>>(storage_);
  PERSONA_CHECK_CODE(shape_mismatch, w.rank() == 2, "a weight matrix must have rank 2, got shape {}",
                     w.shape().to_string());
}

WeightMatrix::WeightMatrix(QuantizedMatrix weights) : storage_(std::move(weights)) {}

WeightMatrix::WeightMatrix(Bf16Matrix weights) : storage_(std::move(weights)) {}

std::size_t WeightMatrix::rows() const noexcept {
  if (const auto* q = quantized_matrix()) return q->rows();
  if (const auto* b = bf16()) return b->rows();
  return f32()->rank() == 2 ? f32()->dim(0) : 0;
}

std::size_t WeightMatrix::cols() const noexcept {
  if (const auto* q = quantized_matrix()) return q->cols();
  if (const auto* b = bf16()) return b->cols();
  return f32()->rank() == 2 ? f32()->dim(1) : 0;
}

std::string WeightMatrix::format() const {
  if (const auto* q = quantized_matrix()) return q->spec().to_string();
  if (bf16() != nullptr) return "bf16";
  return "f32";
}

std::size_t WeightMatrix::bytes() const noexcept {
  if (const auto* q = quantized_matrix()) return q->bytes();
  if (const auto* b = bf16()) return b->bytes();
  return f32()->numel() * sizeof(float);
}

void WeightMatrix::multiply(TensorView<const float> x, TensorView<float> out) const {
  if (const auto* q = quantized_matrix()) {
    quantized_matmul(x, *q, out, QuantProductPath::int8_activations);
  } else if (const auto* b = bf16()) {
    bf16_matmul(x, *b, out);
  } else {
    matmul(x, *f32(), out, Transpose::yes);
  }
}

Tensor<float> WeightMatrix::to_f32() const {
  if (const auto* q = quantized_matrix()) return dequantize(*q);
  if (const auto* b = bf16()) return b->to_f32();
  return *f32();
}

namespace detail {

void weight_product(const WeightMatrix& w, TensorView<const float> x, TensorView<float> out,
                    QuantActivationScratch& scratch, const char* function, bool accumulate, float alpha) {
  if (const QuantizedMatrix* q = w.quantized_matrix()) {
    quantized_product(quant_kernels(active_isa_level()), x, *q, out, QuantProductPath::int8_activations, scratch, false,
                      function, accumulate, alpha);
    return;
  }
  PERSONA_ASSERT(!accumulate);
  if (const Bf16Matrix* b = w.bf16()) {
    // Already inside a task of the caller's: every row on this thread.
    quant_kernels(active_isa_level())
        .product_bf16({b->data(), b->cols(), x.data(), x.dim(0) > 1 ? x.stride(0) : b->cols(), x.dim(0), out.data(),
                       out.dim(0) > 1 ? out.stride(0) : b->rows(), 0, b->rows()});
    return;
  }
  const Tensor<float>& f = *w.f32();
  MatmulArgs args{};
  args.a = x.data();
  args.b = f.data();
  args.c = out.data();
  args.m = x.dim(0);
  args.n = f.dim(0);
  args.k = f.dim(1);
  args.lda = x.stride(0);
  args.ldb = f.dim(1);
  args.ldc = out.stride(0);
  args.b_transposed = true;
  core_kernels().matmul(args);
}

}  // namespace detail
}  // namespace persona
