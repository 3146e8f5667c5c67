// libFuzzer target for the PEFT reader. Input: a 4-byte little-endian length n, n bytes of
// adapter_config.json, then the bytes of adapter_model.safetensors. An accepted adapter must be
// well-formed (A [rank, in] and B [out, rank] with rank >= 1, a finite scale); anything else must be a
// persona::Error. A broken promise fails a PERSONA_FUZZ_CHECK, which libFuzzer reports as a crash.
#include "fuzz_check.hpp"

#include <persona/io/peft_adapter.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  const std::size_t n = data[0] | (data[1] << 8) | (data[2] << 16) | (static_cast<std::size_t>(data[3]) << 24);
  if (n > size - 4) return 0;
  const std::string_view config(reinterpret_cast<const char*>(data + 4), n);
  const std::span<const std::byte> weights(reinterpret_cast<const std::byte*>(data + 4 + n), size - 4 - n);
  for (bool skip : {false, true}) {
    try {
      persona::PeftReadOptions options;
      options.skip_unsupported = skip;
      const persona::LoraAdapter adapter = persona::read_peft_adapter(config, weights, 7, options, "fuzz");
      for (const auto& [target, module] : adapter.modules()) {
        PERSONA_FUZZ_CHECK(module.rank() >= 1);
        PERSONA_FUZZ_CHECK(module.a().rows() == module.rank() && module.b().cols() == module.rank());
        PERSONA_FUZZ_CHECK(module.in_features() >= 1 && module.out_features() >= 1);
        PERSONA_FUZZ_CHECK(std::isfinite(module.scale()));
      }
    } catch (const persona::Error&) {
    }
  }
  return 0;
}
