// Bad model folders and bad steps: each a persona::Error naming the file, tensor or field, never a crash
// or a model that silently computes something else.
#include "test_support.hpp"

#include <persona/core/error.hpp>
#include <persona/io/peft_adapter.hpp>
#include <persona/io/safetensors.hpp>
#include <persona/lora/lora_apply.hpp>
#include <persona/model/checkpoint.hpp>
#include <persona/model/model.hpp>
#include <persona/model/model_file.hpp>

#include <unistd.h>

#include <cstring>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

using namespace persona;

namespace {

const std::filesystem::path kModels = PERSONA_TEST_DATA_DIR "/models";

// A private copy of a fixture model folder, removed at the end of the test.
class ModelCopy {
 public:
  explicit ModelCopy(const std::string& name)
      : path_(std::filesystem::temp_directory_path() /
              ("persona_model_" + name + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++))) {
    std::filesystem::remove_all(path_);
    std::filesystem::copy(kModels / name, path_, std::filesystem::copy_options::recursive);
  }
  ~ModelCopy() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const noexcept { return path_; }

  // Rewrites model.safetensors through `edit`, which receives every tensor as f32 (name, tensor) and adds
  // what it keeps to the writer.
  void rewrite(const std::function<void(const SafetensorsReader&, SafetensorsWriter&)>& edit) const {
    SafetensorsWriter writer;
    {
      const SafetensorsReader reader = SafetensorsReader::open(path_ / "model.safetensors");
      edit(reader, writer);
    }
    writer.write(path_ / "model.safetensors");
  }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

void copy_all_but(const SafetensorsReader& r, SafetensorsWriter& w, const std::string& skip) {
  for (const SafetensorsTensor& t : r.tensors()) {
    if (t.name != skip) w.add(t.name, t.dtype, t.shape, t.data);
  }
}

void write_text(const std::filesystem::path& path, const std::string& text) { std::ofstream(path) << text; }

}  // namespace

TEST_CASE("A model folder with missing, extra or misshapen tensors is refused, naming the tensor", "[model]") {
  {
    const ModelCopy copy("qwen3");
    copy.rewrite([](const SafetensorsReader& r, SafetensorsWriter& w) { copy_all_but(r, w, "model.norm.weight"); });
    PERSONA_REQUIRE_ERROR(Model::load(copy.path()), corrupt_data, "tensor 'model.norm.weight' is missing");
  }
  {
    const ModelCopy copy("qwen3");
    copy.rewrite([](const SafetensorsReader& r, SafetensorsWriter& w) {
      copy_all_but(r, w, "");
      w.add("model.layers.0.mlp.extra_proj.weight", Tensor<float>({2, 2}));
    });
    PERSONA_REQUIRE_ERROR(Model::load(copy.path()), corrupt_data,
                          "1 tensor(s) are not part of the architecture config.json describes: "
                          "model.layers.0.mlp.extra_proj.weight");
  }
  {
    const ModelCopy copy("qwen3");
    copy.rewrite([](const SafetensorsReader& r, SafetensorsWriter& w) {
      copy_all_but(r, w, "model.layers.1.self_attn.k_norm.weight");
      w.add("model.layers.1.self_attn.k_norm.weight", Tensor<float>({8}));
    });
    PERSONA_REQUIRE_ERROR(Model::load(copy.path()), shape_mismatch,
                          "tensor 'model.layers.1.self_attn.k_norm.weight' in model.safetensors has shape [8]; "
                          "config.json implies [16]");
  }
  {
    const ModelCopy copy("qwen3");
    copy.rewrite([](const SafetensorsReader& r, SafetensorsWriter& w) {
      copy_all_but(r, w, "model.norm.weight");
      const std::vector<std::int32_t> ints(32, 1);
      w.add("model.norm.weight", SafetensorsDType::I32, {32}, std::as_bytes(std::span(ints)));
    });
    PERSONA_REQUIRE_ERROR(Model::load(copy.path()), corrupt_data, "'model.norm.weight' in model.safetensors is I32");
  }
  {
    // config.json and the weights disagree: more layers than the file has.
    const ModelCopy copy("llama_tied");
    std::ifstream in(copy.path() / "config.json");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    text.replace(text.find("\"num_hidden_layers\": 2"), 22, "\"num_hidden_layers\": 3");
    write_text(copy.path() / "config.json", text);
    PERSONA_REQUIRE_ERROR(Model::load(copy.path()), corrupt_data,
                          "tensor 'model.layers.2.input_layernorm.weight' is missing");
  }
  {
    const ModelCopy copy("qwen3");
    std::filesystem::remove(copy.path() / "model.safetensors");
    PERSONA_REQUIRE_ERROR(Model::load(copy.path()), not_found,
                          "no model.safetensors and no model.safetensors.index.json");
  }
  PERSONA_REQUIRE_ERROR(Model::load(kModels / "no-such-model"), io_error, "config.json");
}

TEST_CASE("A shard index that names missing files, paths out of the folder or the wrong shard is refused", "[model]") {
  {
    const ModelCopy copy("llama");
    std::filesystem::remove(copy.path() / "model-00002-of-00003.safetensors");
    PERSONA_REQUIRE_ERROR(Checkpoint::open(copy.path()), io_error,
                          "names shard model-00002-of-00003.safetensors, which is missing");
  }
  CHECK(Checkpoint::open(kModels / "llama").shard_count() == 3);
  PERSONA_REQUIRE_ERROR(parse_safetensors_index(R"({"weight_map": {"a": "../../etc/x.safetensors"}})"), corrupt_data,
                        "expected the name of a .safetensors file in the folder");
  PERSONA_REQUIRE_ERROR(parse_safetensors_index(R"({"weight_map": {"a": "model.bin"}})"), corrupt_data,
                        "places tensor 'a' in \"model.bin\"");
  PERSONA_REQUIRE_ERROR(parse_safetensors_index(R"({"weight_map": {}})"), corrupt_data, "no weight_map");
  PERSONA_REQUIRE_ERROR(parse_safetensors_index(R"({"weight_map": {"a": "b.safetensors"}, "x": 1})"), corrupt_data,
                        "unknown field 'x'");
  PERSONA_REQUIRE_ERROR(parse_safetensors_index("[]"), corrupt_data, "not a JSON object");
  {
    // The index places a tensor in another shard than the one holding it.
    const ModelCopy copy("llama");
    std::ifstream in(copy.path() / "model.safetensors.index.json");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::string from = "\"model.norm.weight\": \"model-00002-of-00003.safetensors\"";
    REQUIRE(text.find(from) != std::string::npos);
    text.replace(text.find(from), from.size(), "\"model.norm.weight\": \"model-00001-of-00003.safetensors\"");
    write_text(copy.path() / "model.safetensors.index.json", text);
    PERSONA_REQUIRE_ERROR(Checkpoint::open(copy.path()), corrupt_data, "tensor 'model.norm.weight'");
  }
}

TEST_CASE("A step the model cannot run is refused before anything is written", "[model]") {
  const Model model = Model::load(kModels / "qwen3");
  PagedKvCache cache(model.kv_cache_config(16, 4));
  ModelWorkspace workspace;
  const SequenceId id = cache.create_sequence({.tenant = 1});
  const std::vector<SequenceId> ids{id};
  const std::vector<std::size_t> one{1};
  const std::vector<std::int32_t> token{5}, outside{96};
  cache.append_tokens(id, token);
  PERSONA_REQUIRE_ERROR(model.forward({ids, one, outside}, cache, workspace), out_of_range,
                        "token 0 is 96, outside the vocabulary of 96");
  const std::vector<std::size_t> two{2};
  PERSONA_REQUIRE_ERROR(model.forward({ids, two, token}, cache, workspace), shape_mismatch,
                        "the token counts add up to 2 but 1 tokens are given");
  const std::vector<SequenceId> twice{id, id};
  const std::vector<std::size_t> ones{1, 1};
  const std::vector<std::int32_t> tokens{5, 5};
  PERSONA_REQUIRE_ERROR(model.forward({twice, ones, tokens}, cache, workspace), invalid_argument, "appears twice");
  const std::vector<std::int32_t> slot{0};
  PERSONA_REQUIRE_ERROR(model.forward({ids, one, token, slot}, cache, workspace), out_of_range,
                        "token 0 has LoRA slot 0 but 0 adapters are given");
  const std::vector<std::size_t> row{3};
  PERSONA_REQUIRE_ERROR(model.forward({ids, one, token, {}, {}, row}, cache, workspace), out_of_range,
                        "logit row 3 of a batch of 1 tokens");
  CHECK(cache.written_tokens(id, 0) == 0);  // nothing was written by the refused steps
  CHECK_NOTHROW(model.forward({ids, one, token}, cache, workspace));
  // The token is computed now; a step that brings it again is not what the cache holds.
  PERSONA_REQUIRE_ERROR(model.forward({ids, one, token}, cache, workspace), invalid_argument,
                        "has 1 positions, 1 of them computed");
}

TEST_CASE("An adapter made for another architecture or shape is refused, naming the module", "[model]") {
  const Model qwen3 = Model::load(kModels / "qwen3");
  PagedKvCache cache(qwen3.kv_cache_config(16, 4));
  ModelWorkspace workspace;
  const SequenceId id = cache.create_sequence({.tenant = 1});
  const std::vector<SequenceId> ids{id};
  const std::vector<std::size_t> one{1};
  const std::vector<std::int32_t> token{5}, slot{0};
  cache.append_tokens(id, token);
  // Llama's k_proj is [16, 32]; Qwen3's (head_dim 16) is [32, 32].
  const LoraAdapter llama = read_peft_adapter(kModels / "llama" / "adapter", 1);
  const std::vector<const LoraAdapter*> wrong_shape{&llama};
  PERSONA_REQUIRE_ERROR(qwen3.forward({ids, one, token, slot, wrong_shape}, cache, workspace), shape_mismatch,
                        "layer 0 module 'self_attn.k_proj' is [out 16, in 32] but the model's layer is [32, 32]");
  // Mixtral's experts do not exist in a dense model.
  const LoraAdapter mixtral = read_peft_adapter(kModels / "mixtral" / "adapter", 1);
  const std::vector<const LoraAdapter*> wrong_architecture{&mixtral};
  const Model llama_model = Model::load(kModels / "llama");
  PagedKvCache llama_cache(llama_model.kv_cache_config(16, 4));
  const SequenceId llama_id = llama_cache.create_sequence({.tenant = 1});
  llama_cache.append_tokens(llama_id, token);
  const std::vector<SequenceId> llama_ids{llama_id};
  PERSONA_REQUIRE_ERROR(llama_model.forward({llama_ids, one, token, slot, wrong_architecture}, llama_cache, workspace),
                        invalid_argument, "which this LlamaForCausalLM model does not have");
  // An adapter for a model whose layers sit elsewhere (a vision-language model's language_model).
  LoraAdapter elsewhere = read_peft_adapter(kModels / "qwen3" / "adapter", 1);
  elsewhere.set_layers_path("model.language_model.layers");
  const std::vector<const LoraAdapter*> other_path{&elsewhere};
  PERSONA_REQUIRE_ERROR(qwen3.forward({ids, one, token, slot, other_path}, cache, workspace), invalid_argument,
                        "was made for a model whose layers are at 'model.language_model.layers'");
  CHECK(cache.written_tokens(id, 0) == 0);
  // What the model lists as adaptable is what it accepts: every module of the Mixtral fixture.
  const Model mixtral_model = Model::load(kModels / "mixtral");
  const std::vector<Model::AdaptableModule> modules = mixtral_model.adaptable_modules(0);
  CHECK(modules.size() == 4 + 3 * 4);
  CHECK(modules[4].name == "block_sparse_moe.experts.0.w1");
  CHECK(modules[4].out == 48);
  CHECK(modules[4].in == 32);
  PERSONA_REQUIRE_ERROR(mixtral_model.adaptable_modules(2), out_of_range, "layer 2 of a model with 2 layers");
}

TEST_CASE("A persona model file holds the converted model: the same logits without quantizing again", "[model]") {
  const auto dir = std::filesystem::temp_directory_path() / ("persona_model_file_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  for (const std::string name : {"qwen3_moe_fused", "llama_tied", "mixtral", "qwen2"}) {
    for (const WeightFormat format : {WeightFormat::int4, WeightFormat::bf16, WeightFormat::int8}) {
      DYNAMIC_SECTION(name << " " << static_cast<int>(format)) {
        const std::filesystem::path file = dir / (name + ".persona");
        const ModelConversion report = convert_model(kModels / name, file, format);
        CHECK(report.output_bytes == std::filesystem::file_size(file));
        CHECK(report.input_bytes > 0);
        const Model direct = Model::load(kModels / name, {format});
        const Model converted = Model::load(file);
        CHECK(converted.weight_format() == format);
        CHECK(converted.config().architecture == direct.config().architecture);
        CHECK(converted.weight_bytes() == direct.weight_bytes());
        // Everything but the file's f32 tensors (norms, routers, biases) is used in place from the mapping:
        // the quantized planes (which the writer leaves 64-byte aligned) and the bf16 matrices.
        std::size_t f32_bytes = 0;
        const SafetensorsReader reader = SafetensorsReader::open(file);
        for (const SafetensorsTensor& t : reader.tensors()) {
          if (t.dtype == SafetensorsDType::F32) f32_bytes += t.data.size();
        }
        CHECK(converted.weight_bytes() - converted.mapped_weight_bytes() == f32_bytes);
        if (format != WeightFormat::bf16) CHECK(direct.mapped_weight_bytes() < converted.mapped_weight_bytes());
        // One prompt through both: bit for bit, the weights being the same.
        const std::vector<std::int32_t> prompt{3, 17, 42, 5, 88, 1, 2};
        std::vector<Tensor<float>> logits;
        for (const Model* m : {&direct, &converted}) {
          PagedKvCache cache(m->kv_cache_config(8, 4));
          ModelWorkspace workspace;
          const SequenceId id = cache.create_sequence({.tenant = 1});
          cache.append_tokens(id, prompt);
          const std::vector<SequenceId> ids{id};
          const std::vector<std::size_t> counts{prompt.size()};
          logits.push_back(m->forward({ids, counts, prompt}, cache, workspace));
        }
        REQUIRE(logits[0].numel() == logits[1].numel());
        CHECK(std::memcmp(logits[0].data(), logits[1].data(), logits[0].numel() * sizeof(float)) == 0);
        PERSONA_REQUIRE_ERROR(Model::load(file, {WeightFormat::f32}), invalid_argument, "the model file holds");
      }
    }
  }
  // Damage anywhere is caught by the checksum before anything is used.
  const std::filesystem::path file = dir / "damaged.persona";
  convert_model(kModels / "qwen3", file, WeightFormat::int4);
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-100, std::ios::end);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x5a);
    f.seekp(-100, std::ios::end);
    f.write(&c, 1);
  }
  PERSONA_REQUIRE_ERROR(Model::load(file), corrupt_data, "checksum mismatch");
  // A safetensors file that is not a model file says so.
  SafetensorsWriter plain;
  plain.add("x", Tensor<float>({2}));
  plain.write(dir / "plain.safetensors");
  PERSONA_REQUIRE_ERROR(Model::load(dir / "plain.safetensors"), corrupt_data, "not a persona model file");
  std::filesystem::remove_all(dir);
}
