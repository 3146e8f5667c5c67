// One call from a PEFT adapter folder to a quantized persona adapter file: read it (PEFT's rules), quantize
// every module with quantize_lora, write the file atomically, and read it back (checksum verified).
#pragma once

#include "persona/io/peft_adapter.hpp"
#include "persona/lora/lora_quantize.hpp"

#include <cstdint>
#include <filesystem>
#include <map>

namespace persona {

struct PeftConversionReport {
  std::map<LoraTarget, LoraQuantReport> modules;  // what each module's A and B became, and their errors
  std::uintmax_t peft_bytes = 0;                  // adapter_model.safetensors
  std::uintmax_t persona_bytes = 0;               // the file written
};

// The adapter belongs to `owner` (kPublicTenant: public), as with read_peft_adapter. Errors are those of
// read_peft_adapter, quantize_lora, write_persona_adapter and read_persona_adapter.
PeftConversionReport convert_peft_adapter(const std::filesystem::path& peft_folder,
                                          const std::filesystem::path& persona_file, TenantId owner,
                                          const QuantSpec& spec, QuantMethod method = QuantMethod::round_to_nearest,
                                          const PeftReadOptions& options = {});

}  // namespace persona
