// libFuzzer target: any bytes given to the safetensors reader give a reader or a persona::Error, never
// a crash or an out-of-bounds read (built with AddressSanitizer).
#include <persona/io/safetensors.hpp>

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto reader = persona::SafetensorsReader::parse({reinterpret_cast<const std::byte*>(data), size}, "fuzz");
    for (const auto& t : reader.tensors()) {
      if (t.dtype == persona::SafetensorsDType::F32 || t.dtype == persona::SafetensorsDType::F16 ||
          t.dtype == persona::SafetensorsDType::BF16) {
        if (t.shape.size() <= persona::kMaxRank && t.numel() < (1u << 20)) (void)reader.read_f32(t.name);
      }
    }
  } catch (const persona::Error&) {
  }
  return 0;
}
