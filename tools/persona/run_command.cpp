// persona run: loads a model folder (and optionally a LoRA adapter), feeds it the prompt (token ids, or text
// through the tokenizer) and decodes greedily, printing the generated ids or streaming their text.
#include "command_line.hpp"
#include "commands.hpp"

#include <persona/persona.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <limits>

namespace persona::cli {
namespace {

constexpr const char* kRunUsage =
    "usage: persona run --model DIR (--tokens ID,ID,... | --prompt TEXT [--tokenizer DIR]) [--max-new-tokens N]\n"
    "                   [--adapter PEFT_DIR|FILE.persona] [--weights f32|bf16|int8|int4] [--ignore-eos]\n"
    "                   [--logits-out FILE.safetensors] [--print ids|text] [--threads N]\n"
    "\n"
    "Loads the Hugging Face model folder DIR (config.json, model.safetensors or shards), or a persona model\n"
    "file (persona convert-model), runs the prompt's\n"
    "token ids through it and decodes greedily until N new tokens (default 16) or an eos id of\n"
    "generation_config.json (printed, then the run stops). Prints the generated ids on one line, separated\n"
    "by spaces, or with --prompt the text as it is generated.\n"
    "  --prompt          text, encoded by the tokenizer of DIR (or --tokenizer DIR: tokenizer.json, or a\n"
    "                    SentencePiece tokenizer.model) with its special tokens\n"
    "  --adapter         a PEFT LoRA adapter folder, or a persona adapter file (persona convert-peft), applied\n"
    "                    to every token\n"
    "  --weights         how the base weights are held: f32 (default), bf16 (a bf16 checkpoint's used in place\n"
    "                    from its mapping), or quantized at load to int8 / int4\n"
    "  --ignore-eos      decode N tokens whatever they are\n"
    "  --logits-out      also write the logits each token was chosen from: \"logits\" [N, vocab] (F32) and\n"
    "                    \"tokens\" [N] (I32) in a safetensors file\n"
    "  --print           ids, or text (the default with --prompt: streamed, special tokens left out)\n"
    "  --threads         worker threads (default: all cores)\n";

std::size_t argmax(const float* logits, std::size_t n) {
  return static_cast<std::size_t>(std::max_element(logits, logits + n) - logits);
}

}  // namespace

WeightFormat parse_weight_format(const std::string& text) {
  if (text == "f32") return WeightFormat::f32;
  if (text == "bf16") return WeightFormat::bf16;
  if (text == "int8") return WeightFormat::int8;
  if (text == "int4") return WeightFormat::int4;
  throw UsageError(fmt::format("--weights takes f32, bf16, int8 or int4, not '{}'", text));
}

const char* weight_format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::f32: return "f32";
    case WeightFormat::bf16: return "bf16";
    case WeightFormat::int8: return "int8";
    default: return "int4";
  }
}

int run_command(int argc, char** argv, int first) {
  std::filesystem::path model_dir, adapter_path, logits_out;
  std::vector<std::int32_t> prompt;
  std::optional<std::string> prompt_text;
  std::filesystem::path tokenizer_dir;
  bool print_text = false;
  std::size_t max_new_tokens = 16;
  std::optional<WeightFormat> weights;
  bool ignore_eos = false;
  try {
    const CommandLine cl(argc, argv, first,
                         {"--model", "--adapter", "--weights", "--tokens", "--prompt", "--tokenizer",
                          "--max-new-tokens", "--logits-out", "--print", "--threads"},
                         {"--ignore-eos"});
    if (cl.help()) {
      std::fputs(kRunUsage, stdout);
      return 0;
    }
    if (!cl.positional().empty()) throw UsageError(fmt::format("unexpected argument '{}'", cl.positional()[0]));
    model_dir = cl.required("--model");
    prompt_text = cl.value("--prompt");
    if (prompt_text.has_value() == cl.has("--tokens")) throw UsageError("give --tokens or --prompt (one of them)");
    if (!prompt_text) {
      if (cl.has("--tokenizer")) throw UsageError("--tokenizer goes with --prompt");
      for (const std::uint64_t id :
           parse_number_list(cl.required("--tokens"), "--tokens", 0, std::numeric_limits<std::int32_t>::max())) {
        prompt.push_back(static_cast<std::int32_t>(id));
      }
    }
    tokenizer_dir = cl.value("--tokenizer").value_or(model_dir.string());
    print_text = prompt_text.has_value();
    max_new_tokens = cl.number("--max-new-tokens", 1, 1u << 20).value_or(16);
    if (const auto w = cl.value("--weights")) weights = parse_weight_format(*w);
    if (const auto p = cl.value("--print")) {
      if (*p != "ids" && *p != "text") throw UsageError(fmt::format("--print takes ids or text, not '{}'", *p));
      if (*p == "text" && !prompt_text) throw UsageError("--print text needs --prompt (the tokenizer)");
      print_text = *p == "text";
    }
    if (const auto a = cl.value("--adapter")) adapter_path = *a;
    ignore_eos = cl.has("--ignore-eos");
    if (const auto l = cl.value("--logits-out")) logits_out = *l;
    if (const auto threads = cl.number("--threads", 1, 1024)) set_num_threads(static_cast<int>(*threads));
  } catch (const UsageError& e) {
    std::fprintf(stderr, "persona run: %s\n\n%s", e.what(), kRunUsage);
    return 2;
  }

  try {
    const Model model = Model::load(model_dir, {weights});
    const ModelConfig& config = model.config();
    std::optional<Tokenizer> tokenizer;
    if (prompt_text) {
      tokenizer.emplace(Tokenizer::load(tokenizer_dir));
      prompt = tokenizer->encode(*prompt_text, {.truncate = false, .pad = false});
      if (prompt.empty()) throw Error(ErrorCode::invalid_argument, "persona run", "the prompt encodes to no tokens");
    }
    std::optional<StreamDecoder> stream;
    if (print_text) stream.emplace(*tokenizer, true);
    // The adapter serves this one local run: its owner is the public tenant, the sequence's tenant 1.
    std::optional<LoraAdapter> adapter;
    if (!adapter_path.empty()) {
      adapter = std::filesystem::is_directory(adapter_path) ? read_peft_adapter(adapter_path, kPublicTenant)
                                                            : read_persona_adapter(adapter_path);
    }
    const std::size_t positions = prompt.size() + max_new_tokens;
    PagedKvCache cache(model.kv_cache_config(positions / 16 + 2, 16));
    ModelWorkspace workspace;
    const SequenceId id = cache.create_sequence({.tenant = 1});
    const std::vector<SequenceId> ids{id};
    const std::vector<const LoraAdapter*> adapters{adapter ? &*adapter : nullptr};

    const std::size_t V = config.vocab_size;
    std::vector<std::int32_t> generated;
    std::vector<float> all_logits;
    std::vector<std::int32_t> next = prompt;
    while (generated.size() < max_new_tokens) {
      cache.append_tokens(id, next);
      const std::vector<std::size_t> counts{next.size()};
      const std::vector<std::int32_t> slots(adapter ? next.size() : 0, 0);
      const Tensor<float> logits = model.forward({ids, counts, next, slots, adapters}, cache, workspace);
      const auto token = static_cast<std::int32_t>(argmax(logits.data(), V));
      generated.push_back(token);
      if (stream) {
        std::fputs(stream->step(token).c_str(), stdout);
        std::fflush(stdout);
      }
      if (!logits_out.empty()) all_logits.insert(all_logits.end(), logits.data(), logits.data() + V);
      if (!ignore_eos &&
          std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), token) != config.eos_token_ids.end()) {
        break;
      }
      next = {token};
    }
    if (!logits_out.empty()) {
      SafetensorsWriter writer;
      writer.add("logits", TensorView<const float>(all_logits.data(), {generated.size(), V}));
      writer.add("tokens", SafetensorsDType::I32, {generated.size()}, std::as_bytes(std::span(generated)));
      writer.write(logits_out);
    }
    if (stream) {
      std::fputs((stream->finish() + "\n").c_str(), stdout);
    } else {
      fmt::print("{}\n", fmt::join(generated, " "));
    }
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "persona run: %s\n", e.what());
    return 1;
  }
}

}  // namespace persona::cli
