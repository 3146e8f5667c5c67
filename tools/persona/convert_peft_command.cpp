// persona convert-peft: converts a PEFT LoRA adapter folder into a quantized persona adapter file and
// reports what it cost. The owner is required: --public (every tenant is served the adapter) is a choice,
// never a default. B's groups run along the rank: a rank below the group size takes groups of 16 or 8
// (lora_quantize.hpp).
#include "command_line.hpp"
#include "commands.hpp"

#include <persona/persona.hpp>

#include <fmt/format.h>

#include <cstdio>
#include <limits>
#include <optional>

namespace persona::cli {
namespace {

constexpr const char* kConvertPeftUsage =
    "usage: persona convert-peft IN_DIR OUT_FILE (--tenant N | --public) [--bits 8|4|2] [--group 8|16|32|64|128]\n"
    "                            [--asym] [--nf4] [--search]\n"
    "\n"
    "Reads the PEFT adapter folder IN_DIR (adapter_config.json + adapter_model.safetensors), quantizes its\n"
    "LoRA factors and writes the checksummed persona adapter file OUT_FILE, then reads it back.\n"
    "  --tenant N | --public   the adapter's owner (required): tenant N only, or every tenant\n"
    "  --bits, --group         the quantization (default int4, groups of 64), --asym with a minimum per group,\n"
    "                          --nf4 the QLoRA codebook\n"
    "  --search                search each group's scale for the least error (slower)\n";

std::string describe(const char* name, const std::optional<QuantSpec>& spec, const QuantErrorReport& e,
                     const LoraMatrix& m) {
  if (!spec) return fmt::format("  {}: [{}, {}] kept f32 (its rows fit no group size)", name, m.rows(), m.cols());
  return fmt::format("  {} {}: rmse {:.3g}, max {:.3g}, snr {:.1f} dB", name, spec->to_string(), e.rmse,
                     e.max_abs_error, e.snr_db);
}

}  // namespace

int convert_peft_command(int argc, char** argv, int first) {
  QuantSpec spec{4, 64, true};
  QuantMethod method = QuantMethod::round_to_nearest;
  std::optional<TenantId> owner;
  std::filesystem::path in, out;
  try {
    const CommandLine cl(argc, argv, first, {"--tenant", "--bits", "--group"},
                         {"--public", "--asym", "--nf4", "--search"});
    if (cl.help()) {
      std::fputs(kConvertPeftUsage, stdout);
      return 0;
    }
    if (cl.positional().size() != 2) throw UsageError("expected IN_DIR and OUT_FILE");
    in = cl.positional()[0];
    out = cl.positional()[1];
    if (cl.has("--tenant") && cl.has("--public")) throw UsageError("give --tenant N or --public, not both");
    if (const auto tenant = cl.number("--tenant", 1, std::numeric_limits<std::uint64_t>::max())) owner = *tenant;
    if (cl.has("--public")) owner = kPublicTenant;
    if (!owner) throw UsageError("name the adapter's owner with --tenant N, or --public");
    if (const auto bits = cl.number("--bits", 2, 8)) spec.bits = static_cast<int>(*bits);
    if (const auto group = cl.number("--group", 8, 128)) spec.group_size = static_cast<std::size_t>(*group);
    if (cl.has("--asym")) spec.symmetric = false;
    if (cl.has("--nf4")) {
      spec.codebook = QuantCodebook::nf4;
      spec.bits = 4;
    }
    if (cl.has("--search")) method = QuantMethod::search;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "persona convert-peft: %s\n\n%s", e.what(), kConvertPeftUsage);
    return 2;
  }
  try {
    fmt::print("{} -> {} as {}, owner {}\n", in.string(), out.string(), spec.to_string(),
               *owner == kPublicTenant ? std::string("public") : fmt::format("tenant {}", *owner));
    const PeftConversionReport report = convert_peft_adapter(in, out, *owner, spec, method);
    const LoraAdapter converted = read_persona_adapter(out);
    for (const auto& [target, r] : report.modules) {
      const LoraModule& m = *converted.find(target.layer, target.module);
      fmt::print("layer {} {} (rank {}):{}{}\n", target.layer, target.module, m.rank(),
                 describe("A", r.a_spec, r.a, m.a()), describe("B", r.b_spec, r.b, m.b()));
    }
    // convert_peft_adapter read the file back (checksum verified) before returning.
    fmt::print("{} modules; {} bytes (PEFT safetensors) -> {} bytes ({:.2f}x smaller); reloaded {} modules\n",
               report.modules.size(), report.peft_bytes, report.persona_bytes,
               static_cast<double>(report.peft_bytes) / static_cast<double>(report.persona_bytes),
               converted.modules().size());
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "persona convert-peft: %s\n", e.what());
    return 1;
  }
}

}  // namespace persona::cli
