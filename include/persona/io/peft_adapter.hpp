// PEFT LoRA adapter folders (adapter_config.json + adapter_model.safetensors), as PEFT's
// save_pretrained writes them and from_pretrained reads them, in both directions.
#pragma once

#include "persona/lora/lora_adapter.hpp"

#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace persona {

struct PeftReadOptions {
  std::string id;  // the adapter's id (default: the folder's name)
  // Drop what persona cannot honour and that only adds to the model (modules_to_save tensors, LoRA
  // biases) instead of failing.
  bool skip_unsupported = false;
};

// The adapter belongs to `owner`, which every call names: kPublicTenant makes it public (served to every
// tenant), so that is a choice written out, never a default.
//
// Keys "base_model.model.model.layers.<L>.<module>.lora_{A,B}.weight" become module <module> of layer
// <L>, e.g. "self_attn.q_proj". Rank and alpha follow r / lora_alpha, overridden per module by
// rank_pattern / alpha_pattern (PEFT's rule: key k matches module name m when m matches "(.*\.)?(k)$");
// use_rslora selects alpha / sqrt(r); use_dora reads each module's lora_magnitude_vector. Errors name
// the file and the field or tensor key: corrupt_data (a lora_A without its lora_B, a rank that disagrees
// with the config, a magnitude missing or unexpected, bad JSON), unsupported (bias, modules_to_save
// unless skipped), io_error (missing files).
LoraAdapter read_peft_adapter(const std::filesystem::path& folder, TenantId owner, const PeftReadOptions& options = {});
// The same from the two files' contents; `source` names them in errors (the fuzzer's entry point).
LoraAdapter read_peft_adapter(std::string_view config_json, std::span<const std::byte> safetensors, TenantId owner,
                              const PeftReadOptions& options, const std::filesystem::path& source);

// Writes the adapter back as a PEFT folder (f32 tensors; quantized modules are dequantized), atomically
// per file. The most common rank and alpha become r and lora_alpha, the others rank_pattern and
// alpha_pattern entries. Error(unsupported) if modules mix LoRA and rsLoRA scaling.
void write_peft_adapter(const LoraAdapter& adapter, const std::filesystem::path& folder);

}  // namespace persona
