// persona: the command-line program. `persona COMMAND --help` describes each command.
#include "command_line.hpp"
#include "commands.hpp"

#include <persona/version.hpp>

#include <cstdio>
#include <cstring>
#include <string_view>

namespace {

constexpr const char* kUsage =
    "usage: persona COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  run            load a Hugging Face model folder (and a LoRA adapter) and generate tokens greedily\n"
    "  convert-peft   convert a PEFT LoRA adapter folder into a quantized persona adapter file\n"
    "  convert-model  convert a Hugging Face model folder into a persona model file (quantized once)\n"
    "  tokenize       text lines on stdin to token ids, with a model's or tokenizer folder's tokenizer\n"
    "  detokenize     lines of token ids on stdin back to text\n"
    "\n"
    "persona COMMAND --help describes a command.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string_view command = argv[1];
  if (command == "--help" || command == "-h" || command == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (command == "--version") {
    std::printf("persona %s\n", PERSONA_VERSION_STRING);
    return 0;
  }
  if (command == "run") return persona::cli::run_command(argc, argv, 2);
  if (command == "convert-peft") return persona::cli::convert_peft_command(argc, argv, 2);
  if (command == "convert-model") return persona::cli::convert_model_command(argc, argv, 2);
  if (command == "tokenize") return persona::cli::tokenize_command(argc, argv, 2);
  if (command == "detokenize") return persona::cli::detokenize_command(argc, argv, 2);
  std::fprintf(stderr, "persona: unknown command '%s'\n\n%s", argv[1], kUsage);
  return 2;
}
