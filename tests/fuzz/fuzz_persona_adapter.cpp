// libFuzzer target for the persona adapter reader. Input: a persona adapter file. The target recomputes
// its checksum first (where the field is there), so that the fuzzer reaches the checks behind it: anyone
// can recompute a checksum, and every field the reader trusts must then still be checked. An accepted
// adapter must be well-formed; anything else must be a persona::Error. A broken promise fails a
// PERSONA_FUZZ_CHECK, which libFuzzer reports as a crash.
#include "fuzz_check.hpp"

#include <persona/core/file_io.hpp>
#include <persona/io/persona_adapter.hpp>

#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::byte> file(reinterpret_cast<const std::byte*>(data),
                              reinterpret_cast<const std::byte*>(data) + size);
  const std::string_view field = "\"persona.checksum\":\"";
  const std::string_view text(reinterpret_cast<const char*>(file.data()), file.size());
  if (const std::size_t at = text.find(field); at != std::string_view::npos && at + field.size() + 16 <= size) {
    std::memset(file.data() + at + field.size(), '0', 16);
    const std::string sum = fmt::format("{:016x}", persona::file_checksum(file));
    std::memcpy(file.data() + at + field.size(), sum.data(), 16);
  }
  static const std::filesystem::path path =
      std::filesystem::temp_directory_path() / fmt::format("persona_fuzz_{}.persona", ::getpid());
  persona::write_file_atomically(path, file);
  try {
    const persona::LoraAdapter adapter = persona::read_persona_adapter(path);
    for (const auto& [target, module] : adapter.modules()) {
      PERSONA_FUZZ_CHECK(module.rank() >= 1);
      PERSONA_FUZZ_CHECK(module.a().rows() == module.rank() && module.b().cols() == module.rank());
      PERSONA_FUZZ_CHECK(std::isfinite(module.scale()));
      (void)module.a().to_f32();  // every element of a quantized matrix reachable
      (void)module.b().to_f32();
    }
  } catch (const persona::Error&) {
  }
  return 0;
}
