// libFuzzer target: any bytes given to the safetensors reader give a reader or a persona::Error, never
// a crash or an out-of-bounds read (built with AddressSanitizer). What the reader accepts must keep its
// promises: every tensor's bytes inside the input, as many as its shape and dtype say, and read_f32 of
// the shape; an Error names the source. A broken promise fails a PERSONA_FUZZ_CHECK, which libFuzzer reports as a
// crash.
#include "fuzz_check.hpp"

#include <persona/io/safetensors.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto* begin = reinterpret_cast<const std::byte*>(data);
  try {
    const auto reader = persona::SafetensorsReader::parse({begin, size}, "fuzz");
    for (const auto& t : reader.tensors()) {
      PERSONA_FUZZ_CHECK(t.data.size() == t.numel() * persona::size_of(t.dtype));
      PERSONA_FUZZ_CHECK(t.data.empty() || (t.data.data() >= begin && t.data.data() + t.data.size() <= begin + size));
      if (t.dtype == persona::SafetensorsDType::F32 || t.dtype == persona::SafetensorsDType::F16 ||
          t.dtype == persona::SafetensorsDType::BF16) {
        if (t.shape.size() <= persona::kMaxRank && t.numel() < (1u << 20)) {
          PERSONA_FUZZ_CHECK(reader.read_f32(t.name).numel() == t.numel());
        }
      }
    }
  } catch (const persona::Error& e) {
    PERSONA_FUZZ_CHECK(std::string_view(e.what()).find("fuzz") != std::string_view::npos);
  }
  return 0;
}
