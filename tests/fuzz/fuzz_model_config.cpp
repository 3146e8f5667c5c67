// libFuzzer target for the model folder's JSON readers. Input: a 4-byte little-endian length n, n bytes of
// config.json, then generation_config.json; the whole input is also read as model.safetensors.index.json.
// An accepted config must pass validate() (sizes in range, heads dividing, k <= experts, one window and
// one sparse flag per layer, eos ids in the vocabulary); an accepted index must name only plain
// .safetensors files. Anything else must be a persona::Error.
#include "fuzz_check.hpp"

#include <persona/core/error.hpp>
#include <persona/model/checkpoint.hpp>
#include <persona/model/model_config.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  try {
    for (const auto& [name, file] : persona::parse_safetensors_index(all, "fuzz")) {
      PERSONA_FUZZ_CHECK(file.ends_with(".safetensors") && file.find('/') == std::string::npos);
    }
  } catch (const persona::Error&) {
  }
  if (size < 4) return 0;
  const std::size_t n = data[0] | (data[1] << 8) | (data[2] << 16) | (static_cast<std::size_t>(data[3]) << 24);
  if (n > size - 4) return 0;
  const std::string_view config(reinterpret_cast<const char*>(data + 4), n);
  const std::string_view generation(reinterpret_cast<const char*>(data + 4 + n), size - 4 - n);
  try {
    const persona::ModelConfig c = persona::parse_model_config(config, generation, "fuzz");
    c.validate();
    PERSONA_FUZZ_CHECK(c.num_heads % c.num_kv_heads == 0);
    PERSONA_FUZZ_CHECK(c.attention_window.size() == c.num_layers);
    PERSONA_FUZZ_CHECK(!c.is_moe() || (c.experts_per_token <= c.num_experts && c.sparse_layer.size() == c.num_layers));
    if (c.is_moe()) (void)c.router_config();
  } catch (const persona::Error&) {
  }
  return 0;
}
