// libFuzzer target: any bytes given to the safetensors reader give a reader or a persona::Error, never
// a crash or an out-of-bounds read (built with AddressSanitizer). What the reader accepts must keep its
// promises: every tensor's bytes inside the input, as many as its shape and dtype say, and read_f32 of
// the shape; an Error names the source. A broken promise traps, which libFuzzer reports.
#include <persona/io/safetensors.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace {
void require(bool condition) {
  if (!condition) __builtin_trap();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto* begin = reinterpret_cast<const std::byte*>(data);
  try {
    const auto reader = persona::SafetensorsReader::parse({begin, size}, "fuzz");
    for (const auto& t : reader.tensors()) {
      require(t.data.size() == t.numel() * persona::size_of(t.dtype));
      require(t.data.empty() || (t.data.data() >= begin && t.data.data() + t.data.size() <= begin + size));
      if (t.dtype == persona::SafetensorsDType::F32 || t.dtype == persona::SafetensorsDType::F16 ||
          t.dtype == persona::SafetensorsDType::BF16) {
        if (t.shape.size() <= persona::kMaxRank && t.numel() < (1u << 20)) {
          require(reader.read_f32(t.name).numel() == t.numel());
        }
      }
    }
  } catch (const persona::Error& e) {
    require(std::string_view(e.what()).find("fuzz") != std::string_view::npos);
  }
  return 0;
}
