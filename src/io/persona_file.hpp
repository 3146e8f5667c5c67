// What persona's own safetensors files share (the adapter file, the model file): the checksum field
// over every byte, and weight matrices described in the metadata and stored as planes (docs/formats.md).
// Internal to the library.
#pragma once

#include "persona/core/error.hpp"
#include "persona/io/safetensors.hpp"
#include "persona/quant/weight_matrix.hpp"

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace persona::detail {

// Sets the persona.checksum field, serializes and returns the file with the checksum of every byte (its
// own 16 digits counted as '0') written in.
std::vector<std::byte> seal_persona_file(SafetensorsWriter& tensors, std::string_view source);
// Error(corrupt_data) naming `source` unless the file's persona.checksum (`recorded`) is that of its bytes.
void verify_persona_file(std::span<const std::byte> file, const std::string& recorded, std::string_view source,
                         const char* function);

// One of `known`, else corrupt_data naming the field and the allowed values.
template <std::size_t N>
std::size_t pick(const nlohmann::json& value, const std::array<std::string_view, N>& known, const char* field,
                 const char* function) {
  const std::string text = value.get<std::string>();
  for (std::size_t i = 0; i < N; ++i) {
    if (text == known[i]) return i;
  }
  PERSONA_THROW_AT(function, corrupt_data, "{} is '{}'; expected one of {}", field, text, fmt::join(known, ", "));
}

// {"format": "f32" | "f16" | "bf16" | "quantized", "rows", "cols", [the QuantSpec]}: float matrices are
// stored as float_storage, bf16 ones (Bf16Matrix) as bf16 whatever it is.
nlohmann::json describe_matrix(const WeightMatrix& m, DType float_storage);
// <key>.weight, or <key>.codes / .scales / .minima for quantized matrices. `function` names errors.
void add_matrix(SafetensorsWriter& w, const std::string& key, const WeightMatrix& m, DType float_storage,
                const char* function);
// The matrix `key` as `description` says, every size checked against the file first. With `owner` (what
// keeps the file's bytes alive), a bf16 matrix is used in place, and so is a quantized one whose planes
// are 64-byte aligned (QuantizedMatrix::view); otherwise bf16 is widened to f32 and planes are copied.
WeightMatrix read_matrix(const SafetensorsReader& file, const std::string& key, const nlohmann::json& description,
                         const char* function, std::shared_ptr<const void> owner = nullptr);

}  // namespace persona::detail
