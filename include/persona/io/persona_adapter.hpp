// The persona adapter file: a safetensors file holding each module's A and B as F32 (or F16 / BF16) tensors or as the
// planes of a QuantizedMatrix (U8), the adapter and its QuantSpecs in __metadata__, and a checksum of
// the whole file that is verified on every load. docs/formats.md documents it byte by byte.
#pragma once

#include "persona/core/file_io.hpp"
#include "persona/lora/lora_adapter.hpp"

#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

namespace persona {

inline constexpr int kPersonaAdapterVersion = 3;  // the one version this reads and writes

// Writes atomically (temporary file, fsync, rename). `float_storage` (f32, f16 or bf16, else
// invalid_argument) is the element type of the unquantized matrices in the file; they read back as f32
// (rounded to nearest even on the way out).
void write_persona_adapter(const LoraAdapter& adapter, const std::filesystem::path& path,
                           DType float_storage = DType::f32);
// The bytes write_persona_adapter writes (for writers that place the file themselves, as AdapterStore).
std::vector<std::byte> encode_persona_adapter(const LoraAdapter& adapter, DType float_storage = DType::f32);

// Errors name the file and, where there is one, the tensor or field: corrupt_data (checksum mismatch,
// missing or malformed tensors or metadata, a value outside its known set), unsupported (another format
// version, naming both), io_error.
LoraAdapter read_persona_adapter(const std::filesystem::path& path);

// The checksum stored in the file is file_checksum (persona/core/file_io.hpp, XXH3-64) of every byte of
// the file, its own 16 hex digits counted as '0'.

}  // namespace persona
