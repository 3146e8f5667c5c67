// Quantizing LoRA modules and adapters for storage and serving. A [rank, in] is quantized along `in`
// and B [out, rank] along the rank, so each group of B is at most rank long: a rank shorter than the
// spec's group size takes the largest allowed group (16 or 8) that divides it, and a matrix whose rows
// fit no allowed group (rank 4, or rank 8 at 2 bits) stays f32. DoRA magnitudes stay f32.
#pragma once

#include "persona/lora/lora_adapter.hpp"
#include "persona/lora/lora_module.hpp"
#include "persona/quant/quantize.hpp"

#include <cstddef>
#include <optional>

namespace persona {

// The spec a matrix with rows `cols` long is quantized in: `spec` with the largest allowed group size
// <= spec.group_size that divides cols; nullopt when none does. Error if spec is invalid.
std::optional<QuantSpec> lora_matrix_spec(std::size_t cols, const QuantSpec& spec);

struct LoraQuantReport {
  std::optional<QuantSpec> a_spec, b_spec;  // nullopt: kept f32
  QuantErrorReport a, b;                    // zero for a matrix kept f32
};

// A quantized copy of `module` (f32 or already quantized matrices are dequantized first). report, if
// given, receives what was done to each matrix.
LoraModule quantize_lora(const LoraModule& module, const QuantSpec& spec,
                         QuantMethod method = QuantMethod::round_to_nearest, LoraQuantReport* report = nullptr);
LoraAdapter quantize_lora(const LoraAdapter& adapter, const QuantSpec& spec,
                          QuantMethod method = QuantMethod::round_to_nearest);

}  // namespace persona
