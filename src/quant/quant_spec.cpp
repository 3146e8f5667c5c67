#include "persona/quant/quant_spec.hpp"

#include "persona/core/error.hpp"

#include <fmt/format.h>

namespace persona {

void QuantSpec::validate() const {
  PERSONA_CHECK(bits == 8 || bits == 4 || bits == 2, "QuantSpec.bits is {}; allowed values are 8, 4, 2", bits);
  PERSONA_CHECK(group_size == 8 || group_size == 16 || group_size == 32 || group_size == 64 || group_size == 128,
                "QuantSpec.group_size is {}; allowed values are 8, 16, 32, 64, 128", group_size);
  // A group is whole code tiles (docs/formats.md): 16 columns for 2-bit codes.
  PERSONA_CHECK(group_size % tile_traits(bits).columns_per_tile == 0,
                "QuantSpec.group_size is {} but {}-bit codes come in tiles of {} columns: use a multiple of it",
                group_size, bits, tile_traits(bits).columns_per_tile);
  PERSONA_CHECK(scale_type == DType::f16 || scale_type == DType::bf16 || scale_type == DType::f32,
                "QuantSpec.scale_type is {}; allowed types are f16, bf16, f32", name_of(scale_type));
  if (codebook == QuantCodebook::nf4) {
    PERSONA_CHECK(bits == 4, "the NF4 code book needs bits = 4, got {}", bits);
    PERSONA_CHECK(symmetric, "the NF4 code book is symmetric (absmax scale only); symmetric = false given");
  }
}

double QuantSpec::bits_per_weight() const {
  const double param_bits = 8.0 * static_cast<double>(size_of(scale_type)) * (symmetric ? 1.0 : 2.0);
  return bits + param_bits / static_cast<double>(group_size);
}

std::string QuantSpec::to_string() const {
  if (codebook == QuantCodebook::nf4) return fmt::format("nf4 g{} {}", group_size, name_of(scale_type));
  return fmt::format("int{} g{} {} {}", bits, group_size, symmetric ? "sym" : "asym", name_of(scale_type));
}

}  // namespace persona
