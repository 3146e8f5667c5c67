#include "persona/io/peft_conversion.hpp"

#include "persona/io/persona_adapter.hpp"

namespace persona {

PeftConversionReport convert_peft_adapter(const std::filesystem::path& peft_folder,
                                          const std::filesystem::path& persona_file, TenantId owner,
                                          const QuantSpec& spec, QuantMethod method, const PeftReadOptions& options) {
  const LoraAdapter peft = read_peft_adapter(peft_folder, owner, options);
  PeftConversionReport report;
  LoraAdapter converted(peft.id(), peft.tenant());
  for (const auto& [target, module] : peft.modules()) {
    converted.add(target, quantize_lora(module, spec, method, &report.modules[target]));
  }
  write_persona_adapter(converted, persona_file);
  const LoraAdapter check = read_persona_adapter(persona_file);
  PERSONA_CHECK_CODE(corrupt_data, check.modules().size() == converted.modules().size(),
                     "{}: wrote {} modules but read back {}", persona_file.string(), converted.modules().size(),
                     check.modules().size());
  report.peft_bytes = std::filesystem::file_size(peft_folder / "adapter_model.safetensors");
  report.persona_bytes = std::filesystem::file_size(persona_file);
  return report;
}

}  // namespace persona
