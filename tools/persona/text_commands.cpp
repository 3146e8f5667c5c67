// persona tokenize / detokenize: a tokenizer (a model folder or a tokenizer folder) on lines of stdin, for
// users and for checks from outside (the output compares with Hugging Face tokenizers' line by line).
#include "command_line.hpp"
#include "commands.hpp"

#include <persona/persona.hpp>

#include <fmt/format.h>

#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>

namespace persona::cli {
namespace {

constexpr const char* kTokenizeUsage =
    "usage: persona tokenize --model DIR [--no-special]\n"
    "\n"
    "Reads text lines on stdin and prints, for each, its token ids separated by spaces. DIR holds\n"
    "tokenizer.json (and tokenizer_config.json), or a SentencePiece tokenizer.model. --no-special leaves\n"
    "out the special tokens the tokenizer adds (BOS, [CLS] ... [SEP]); the tokenizer's own truncation and\n"
    "padding are not applied.\n";

constexpr const char* kDetokenizeUsage =
    "usage: persona detokenize --model DIR [--skip-special]\n"
    "\n"
    "Reads lines of space-separated token ids on stdin and prints the text of each. --skip-special leaves\n"
    "out special tokens.\n";

}  // namespace

int tokenize_command(int argc, char** argv, int first) {
  std::string model;
  bool special = true;
  try {
    const CommandLine cl(argc, argv, first, {"--model"}, {"--no-special"});
    if (cl.help()) {
      std::fputs(kTokenizeUsage, stdout);
      return 0;
    }
    if (!cl.positional().empty()) throw UsageError(fmt::format("unexpected argument '{}'", cl.positional()[0]));
    model = cl.required("--model");
    special = !cl.has("--no-special");
  } catch (const UsageError& e) {
    std::fprintf(stderr, "persona tokenize: %s\n\n%s", e.what(), kTokenizeUsage);
    return 2;
  }
  try {
    const Tokenizer tokenizer = Tokenizer::load(model);
    const EncodeOptions options{.add_special_tokens = special, .truncate = false, .pad = false};
    for (std::string line; std::getline(std::cin, line);) {
      const std::vector<std::int32_t> ids = tokenizer.encode(line, options);
      std::string out;
      for (std::size_t i = 0; i < ids.size(); ++i) {
        if (i > 0) out += ' ';
        out += std::to_string(ids[i]);
      }
      out += '\n';
      std::fwrite(out.data(), 1, out.size(), stdout);
    }
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "persona tokenize: %s\n", e.what());
    return 1;
  }
}

int detokenize_command(int argc, char** argv, int first) {
  std::string model;
  bool skip = false;
  try {
    const CommandLine cl(argc, argv, first, {"--model"}, {"--skip-special"});
    if (cl.help()) {
      std::fputs(kDetokenizeUsage, stdout);
      return 0;
    }
    if (!cl.positional().empty()) throw UsageError(fmt::format("unexpected argument '{}'", cl.positional()[0]));
    model = cl.required("--model");
    skip = cl.has("--skip-special");
  } catch (const UsageError& e) {
    std::fprintf(stderr, "persona detokenize: %s\n\n%s", e.what(), kDetokenizeUsage);
    return 2;
  }
  try {
    const Tokenizer tokenizer = Tokenizer::load(model);
    std::size_t number = 0;
    for (std::string line; std::getline(std::cin, line);) {
      ++number;
      std::vector<std::int32_t> ids;
      try {
        std::istringstream words(line);
        for (std::string word; words >> word;) {
          ids.push_back(static_cast<std::int32_t>(parse_number(word, fmt::format("line {}", number), 0, 0x7fffffff)));
        }
      } catch (const UsageError& e) {
        std::fprintf(stderr, "persona detokenize: %s\n", e.what());
        return 1;
      }
      const std::string text = tokenizer.decode(ids, skip) + "\n";
      std::fwrite(text.data(), 1, text.size(), stdout);
    }
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "persona detokenize: %s\n", e.what());
    return 1;
  }
}

}  // namespace persona::cli
