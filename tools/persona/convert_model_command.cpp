// persona convert-model: converts a Hugging Face model folder into a persona model file in the weight
// format it will be served in, so that loading it quantizes nothing.
#include "command_line.hpp"
#include "commands.hpp"

#include <persona/persona.hpp>

#include <fmt/format.h>

#include <chrono>
#include <cstdio>

namespace persona::cli {
namespace {

constexpr const char* kConvertModelUsage =
    "usage: persona convert-model IN_DIR OUT_FILE [--bits 4|8 | --weights f32|bf16|int8|int4]\n"
    "\n"
    "Loads the Hugging Face model folder IN_DIR (every check of persona run), converts its weights (default\n"
    "--bits 4: int4, groups of 32) and writes the checksummed persona model file OUT_FILE, then reads it\n"
    "back. persona run --model OUT_FILE and Model::load(OUT_FILE) map it without quantizing again.\n";

}  // namespace

int convert_model_command(int argc, char** argv, int first) {
  WeightFormat format = WeightFormat::int4;
  std::filesystem::path in, out;
  try {
    const CommandLine cl(argc, argv, first, {"--bits", "--weights"}, {});
    if (cl.help()) {
      std::fputs(kConvertModelUsage, stdout);
      return 0;
    }
    if (cl.positional().size() != 2) throw UsageError("expected IN_DIR and OUT_FILE");
    in = cl.positional()[0];
    out = cl.positional()[1];
    if (cl.has("--bits") && cl.has("--weights")) throw UsageError("give --bits or --weights, not both");
    if (const auto bits = cl.value("--bits")) {
      if (*bits != "4" && *bits != "8") throw UsageError(fmt::format("--bits takes 4 or 8, not '{}'", *bits));
      format = *bits == "4" ? WeightFormat::int4 : WeightFormat::int8;
    }
    if (const auto w = cl.value("--weights")) format = parse_weight_format(*w);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "persona convert-model: %s\n\n%s", e.what(), kConvertModelUsage);
    return 2;
  }
  try {
    const auto start = std::chrono::steady_clock::now();
    const ModelConversion report = convert_model(in, out, format);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print("{} -> {} ({}): {} bytes of tensors -> {} bytes ({:.2f}x) in {:.1f} s; read back\n", in.string(),
               out.string(), weight_format_name(format), report.input_bytes, report.output_bytes,
               static_cast<double>(report.input_bytes) / static_cast<double>(report.output_bytes), seconds);
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "persona convert-model: %s\n", e.what());
    return 1;
  }
}

}  // namespace persona::cli
