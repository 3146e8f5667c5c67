// Converts a PEFT LoRA adapter folder into a quantized persona adapter file, and reports what it cost:
//   convert_peft IN_DIR OUT_FILE [--bits 8|4|2] [--group 32|64|128] [--asym] [--nf4] [--search]
// B matrices whose rank is not a multiple of the group size stay f32 (groups run along the rank).
#include <persona/persona.hpp>

#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

namespace {

int usage() {
  std::fprintf(stderr,
               "usage: convert_peft IN_DIR OUT_FILE [--bits 8|4|2] [--group 32|64|128] [--asym] [--nf4] [--search]\n");
  return 2;
}

persona::LoraMatrix quantize_if_possible(const persona::LoraMatrix& m, const persona::QuantSpec& spec,
                                         persona::QuantMethod method, const char* name, std::string& report) {
  const persona::Tensor<float> w = m.to_f32();
  if (m.cols() % spec.group_size != 0) {
    report +=
        fmt::format("  {}: [{}, {}] kept f32 (cols not a multiple of {})", name, m.rows(), m.cols(), spec.group_size);
    return m;
  }
  persona::QuantizedMatrix q = persona::quantize(w, spec, method);
  const persona::QuantErrorReport e = persona::error_report(w, q);
  report += fmt::format("  {}: rmse {:.3g}, max {:.3g}, snr {:.1f} dB", name, e.rmse, e.max_abs_error, e.snr_db);
  return persona::LoraMatrix(std::move(q));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  persona::QuantSpec spec{4, 64, true};
  persona::QuantMethod method = persona::QuantMethod::round_to_nearest;
  for (int i = 3; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--bits" && i + 1 < argc) {
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
  try {
    spec.validate();
    const std::filesystem::path in = argv[1], out = argv[2];
    const persona::LoraAdapter peft = persona::read_peft_adapter(in);
    persona::LoraAdapter converted(peft.id(), peft.tenant());
    fmt::print("{} -> {} as {}\n", in.string(), out.string(), spec.to_string());
    for (const auto& [target, module] : peft.modules()) {
      std::string report = fmt::format("layer {} {} (rank {}):", target.layer, target.module, module.rank());
      persona::LoraMatrix a = quantize_if_possible(module.a(), spec, method, "A", report);
      persona::LoraMatrix b = quantize_if_possible(module.b(), spec, method, "B", report);
      fmt::print("{}\n", report);
      converted.add(target, persona::LoraModule(std::move(a), std::move(b), module.alpha(), module.scaling()));
    }
    persona::write_persona_adapter(converted, out);
    const auto before = std::filesystem::file_size(in / "adapter_model.safetensors");
    const auto after = std::filesystem::file_size(out);
    // Read it back: the file must load (checksum verified) before we call it done.
    const persona::LoraAdapter check = persona::read_persona_adapter(out);
    fmt::print("{} modules; {} bytes (PEFT safetensors) -> {} bytes ({:.2f}x smaller); reloaded {} modules\n",
               converted.modules().size(), before, after, static_cast<double>(before) / static_cast<double>(after),
               check.modules().size());
    return 0;
  } catch (const persona::Error& e) {
    std::fprintf(stderr, "convert_peft: %s\n", e.what());
    return 1;
  }
}
