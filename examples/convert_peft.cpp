// Converts a PEFT LoRA adapter folder into a quantized persona adapter file, and reports what it cost:
//   convert_peft IN_DIR OUT_FILE (--tenant N | --public) [--bits 8|4|2] [--group 8|16|32|64|128] [--asym]
//                [--nf4] [--search]
// The owner is required: --public (every tenant is served the adapter) is a choice, never a default.
// B's groups run along the rank: a rank below the group size takes groups of 16 or 8 (see lora_quantize.hpp).
#include <persona/persona.hpp>

#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>

namespace {

int usage() {
  std::fprintf(
      stderr,
      "usage: convert_peft IN_DIR OUT_FILE (--tenant N | --public) [--bits 8|4|2] [--group 8|16|32|64|128] [--asym]\n"
      "                    [--nf4] [--search]\n");
  return 2;
}

std::string describe(const char* name, const std::optional<persona::QuantSpec>& spec,
                     const persona::QuantErrorReport& e, const persona::LoraMatrix& m) {
  if (!spec) return fmt::format("  {}: [{}, {}] kept f32 (its rows fit no group size)", name, m.rows(), m.cols());
  return fmt::format("  {} {}: rmse {:.3g}, max {:.3g}, snr {:.1f} dB", name, spec->to_string(), e.rmse,
                     e.max_abs_error, e.snr_db);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  persona::QuantSpec spec{4, 64, true};
  persona::QuantMethod method = persona::QuantMethod::round_to_nearest;
  std::optional<persona::TenantId> owner;
  for (int i = 3; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--tenant" && i + 1 < argc && !owner) {
      char* end = nullptr;
      const char* text = argv[++i];
      errno = 0;
      const unsigned long long tenant = std::strtoull(text, &end, 10);
      if (*text == '\0' || *text == '-' || *end != '\0' || errno != 0 || tenant == persona::kPublicTenant) {
        std::fprintf(stderr, "convert_peft: --tenant takes a tenant id from 1 to 2^64-1 (use --public for %llu)\n",
                     static_cast<unsigned long long>(persona::kPublicTenant));
        return 2;
      }
      owner = tenant;
    } else if (arg == "--public" && !owner) {
      owner = persona::kPublicTenant;
    } else if (arg == "--bits" && i + 1 < argc) {
      spec.bits = std::atoi(argv[++i]);
    } else if (arg == "--group" && i + 1 < argc) {
      spec.group_size = static_cast<std::size_t>(std::atoi(argv[++i]));
    } else if (arg == "--asym") {
      spec.symmetric = false;
    } else if (arg == "--nf4") {
      spec.codebook = persona::QuantCodebook::nf4;
      spec.bits = 4;
    } else if (arg == "--search") {
      method = persona::QuantMethod::search;
    } else {
      return usage();
    }
  }
  if (!owner) {
    std::fprintf(stderr, "convert_peft: name the adapter's owner with --tenant N, or --public\n");
    return usage();
  }
  try {
    const std::filesystem::path in = argv[1], out = argv[2];
    fmt::print("{} -> {} as {}, owner {}\n", in.string(), out.string(), spec.to_string(),
               *owner == persona::kPublicTenant ? std::string("public") : fmt::format("tenant {}", *owner));
    const persona::PeftConversionReport report = persona::convert_peft_adapter(in, out, *owner, spec, method);
    const persona::LoraAdapter converted = persona::read_persona_adapter(out);
    for (const auto& [target, r] : report.modules) {
      const persona::LoraModule& m = *converted.find(target.layer, target.module);
      fmt::print("layer {} {} (rank {}):{}{}\n", target.layer, target.module, m.rank(),
                 describe("A", r.a_spec, r.a, m.a()), describe("B", r.b_spec, r.b, m.b()));
    }
    // convert_peft_adapter read the file back (checksum verified) before returning.
    fmt::print("{} modules; {} bytes (PEFT safetensors) -> {} bytes ({:.2f}x smaller); reloaded {} modules\n",
               report.modules.size(), report.peft_bytes, report.persona_bytes,
               static_cast<double>(report.peft_bytes) / static_cast<double>(report.persona_bytes),
               converted.modules().size());
    return 0;
  } catch (const persona::Error& e) {
    std::fprintf(stderr, "convert_peft: %s\n", e.what());
    return 1;
  }
}
