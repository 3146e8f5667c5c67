#include "persona/core/dtype.hpp"

#include "core/kernels/core_kernel_table.hpp"
#include "persona/core/error.hpp"

namespace persona {

DType parse_dtype(std::string_view name) {
  for (DType t : {DType::f32, DType::f16, DType::bf16, DType::i8, DType::i32, DType::u8}) {
    if (name == name_of(t)) return t;
  }
  PERSONA_THROW(invalid_argument, "unknown dtype '{}': expected one of f32, f16, bf16, i8, i32, u8", name);
}

namespace {
void check_lengths(std::size_t in, std::size_t out, const char* function) {
  if (in != out) {
    PERSONA_THROW_AT(function, shape_mismatch, "input has {} elements but output has {}", in, out);
  }
}
// f16 and bf16 are standard-layout wrappers of one uint16_t, so their arrays are uint16_t arrays.
static_assert(sizeof(f16) == 2 && sizeof(bf16) == 2);
const std::uint16_t* bits(const f16* p) { return reinterpret_cast<const std::uint16_t*>(p); }
const std::uint16_t* bits(const bf16* p) { return reinterpret_cast<const std::uint16_t*>(p); }
std::uint16_t* bits(f16* p) { return reinterpret_cast<std::uint16_t*>(p); }
std::uint16_t* bits(bf16* p) { return reinterpret_cast<std::uint16_t*>(p); }
}  // namespace

void convert(std::span<const float> in, std::span<f16> out) {
  check_lengths(in.size(), out.size(), "convert(f32 -> f16)");
  detail::core_kernels().f32_to_f16(in.data(), bits(out.data()), in.size());
}
void convert(std::span<const f16> in, std::span<float> out) {
  check_lengths(in.size(), out.size(), "convert(f16 -> f32)");
  detail::core_kernels().f16_to_f32(bits(in.data()), out.data(), in.size());
}
void convert(std::span<const float> in, std::span<bf16> out) {
  check_lengths(in.size(), out.size(), "convert(f32 -> bf16)");
  detail::core_kernels().f32_to_bf16(in.data(), bits(out.data()), in.size());
}
void convert(std::span<const bf16> in, std::span<float> out) {
  check_lengths(in.size(), out.size(), "convert(bf16 -> f32)");
  detail::core_kernels().bf16_to_f32(bits(in.data()), out.data(), in.size());
}

}  // namespace persona
