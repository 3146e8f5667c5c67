// PEFT adapters made by PEFT itself (tests/data/peft, from tools/make_peft_fixtures.py) load into persona,
// apply (also quantized, in a mixed batch) and match PEFT's recorded outputs; they go back to PEFT
// folders unchanged; what persona cannot honour is an Error naming the field.
#include "test_support.hpp"

#include <persona/core/ops.hpp>
#include <persona/io/peft_adapter.hpp>
#include <persona/io/peft_conversion.hpp>
#include <persona/io/persona_adapter.hpp>
#include <persona/io/safetensors.hpp>
#include <persona/lora/lora_apply.hpp>
#include <persona/quant/quantize.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

using namespace persona;

namespace {

const std::filesystem::path kData = PERSONA_TEST_DATA_DIR "/peft";

struct Case {
  std::string key;  // "layers.<L>.<module>"
  std::size_t layer;
  std::string module;
};

// The adapted layers PEFT recorded outputs for.
std::vector<Case> recorded(const SafetensorsReader& expected) {
  std::vector<Case> cases;
  for (const SafetensorsTensor& t : expected.tensors()) {
    if (!t.name.ends_with(".x")) continue;
    const std::string key = t.name.substr(0, t.name.size() - 2);
    const std::size_t dot = key.find('.', 7);  // after "layers."
    cases.push_back({key, std::stoul(key.substr(7, dot - 7)), key.substr(dot + 1)});
  }
  return cases;
}

// y = LoRA(x) for one module through the batched path.
Tensor<float> apply_one(const LoraModule& module, const Tensor<float>& x) {
  Tensor<float> y({x.dim(0), module.out_features()});
  const std::vector<std::int32_t> slots(x.dim(0), 0);
  const LoraModule* slot = &module;
  apply_lora(x, y, std::span(&slot, 1), plan_lora_batch(slots, 1));
  return y;
}

// One module in slot 0.
struct LoraPlanInput {
  explicit LoraPlanInput(const LoraModule* m) : slots{m} {}
  std::vector<const LoraModule*> slots;
};

// scale * sum_r |B_or| sum_c |A_rc x_c|: the size of the terms a LoRA output sums.
double lora_abs_sum(const LoraModule& m, const Tensor<float>& x, std::size_t t, std::size_t o) {
  const Tensor<float> a = m.a().to_f32(), b = m.b().to_f32();
  double total = 0.0;
  for (std::size_t r = 0; r < m.rank(); ++r) {
    double h = 0.0;
    for (std::size_t c = 0; c < m.in_features(); ++c) h += std::fabs(a(r, c) * x(t, c));
    total += std::fabs(b(o, r)) * h;
  }
  return m.scale() * total;
}

// f32 sums in another order than torch: 1e-5 of the sum of |terms| (far above 2^-24 k for k <= 64).
double f32_bound(const LoraModule& m, const Tensor<float>& x, std::size_t t, std::size_t o) {
  return 1e-5 * lora_abs_sum(m, x, t, o) + 1e-6;
}

}  // namespace

TEST_CASE("PEFT adapters match PEFT's outputs", "[io][peft]") {
  for (const char* variant : {"plain", "rslora", "patterns"}) {
    INFO(variant);
    const LoraAdapter adapter =
        read_peft_adapter(kData / variant, 7, PeftReadOptions{.id = "", .skip_unsupported = false});
    CHECK(adapter.id() == variant);
    CHECK(adapter.tenant() == 7);
    const SafetensorsReader expected = SafetensorsReader::open(kData / variant / "expected.safetensors");
    const auto cases = recorded(expected);
    REQUIRE(cases.size() == adapter.modules().size());
    for (const Case& c : cases) {
      INFO(c.key);
      const LoraModule* module = adapter.find(c.layer, c.module);
      REQUIRE(module != nullptr);
      const Tensor<float> x = expected.read_f32(c.key + ".x");
      const Tensor<float> delta = expected.read_f32(c.key + ".delta");
      const Tensor<float> y = apply_one(*module, x);
      for (std::size_t t = 0; t < x.dim(0); ++t) {
        for (std::size_t o = 0; o < module->out_features(); ++o) {
          REQUIRE(std::fabs(y(t, o) - delta(t, o)) <= f32_bound(*module, x, t, o));
        }
      }
    }
  }
  // The config's patterns reached the right modules.
  const LoraAdapter patterns = read_peft_adapter(kData / "patterns", kPublicTenant);
  CHECK(patterns.find(1, "self_attn.q_proj")->rank() == 2);  // "model.layers.1.self_attn.q_proj": 2
  CHECK(patterns.find(0, "self_attn.q_proj")->rank() == 8);
  CHECK(patterns.find(0, "mlp.down_proj")->rank() == 4);  // "down_proj": 4
  CHECK(patterns.find(1, "self_attn.v_proj")->alpha() == 32.0f);
  CHECK(patterns.find(1, "self_attn.k_proj")->alpha() == 16.0f);
  const LoraAdapter rslora = read_peft_adapter(kData / "rslora", kPublicTenant);
  CHECK(rslora.find(0, "self_attn.o_proj")->scale() == Approx(8.0 / 4.0));  // alpha / sqrt(16)
}

TEST_CASE("PEFT adapters quantize and apply in a mixed batch", "[io][peft][lora]") {
  // Three tenants' adapters on layer 0's q_proj, A quantized to int8 (B has rank < 32: kept f32).
  std::vector<LoraModule> modules;
  std::vector<Tensor<float>> xs, deltas;
  for (const char* variant : {"plain", "rslora", "patterns"}) {
    const LoraAdapter adapter = read_peft_adapter(kData / variant, kPublicTenant);
    const LoraModule& m = *adapter.find(0, "self_attn.q_proj");
    modules.emplace_back(LoraMatrix(quantize(m.a().to_f32(), QuantSpec{8, 32, true})), m.b(), m.alpha(), m.scaling());
    const SafetensorsReader expected = SafetensorsReader::open(kData / variant / "expected.safetensors");
    xs.push_back(expected.read_f32("layers.0.self_attn.q_proj.x"));
    deltas.push_back(expected.read_f32("layers.0.self_attn.q_proj.delta"));
  }
  // Batch: token i of variant v at row 3 * i + v, so adapters interleave.
  Tensor<float> x({9, 32}), y({9, 32});
  std::vector<std::int32_t> slots(9);
  for (std::size_t v = 0; v < 3; ++v) {
    for (std::size_t i = 0; i < 3; ++i) {
      std::copy_n(&xs[v](i, 0), 32, &x(3 * i + v, 0));
      slots[3 * i + v] = static_cast<std::int32_t>(v);
    }
  }
  const std::vector<const LoraModule*> slot_modules = {&modules[0], &modules[1], &modules[2]};
  apply_lora(x, y, slot_modules, plan_lora_batch(slots, 3));
  for (std::size_t v = 0; v < 3; ++v) {
    const LoraAdapter adapter = read_peft_adapter(kData / (v == 0   ? "plain"
                                                           : v == 1 ? "rslora"
                                                                    : "patterns"),
                                                  kPublicTenant);
    const Tensor<float> a = adapter.find(0, "self_attn.q_proj")->a().to_f32();
    const Tensor<float> aq = modules[v].a().to_f32();
    const Tensor<float> b = modules[v].b().to_f32();
    for (std::size_t i = 0; i < 3; ++i) {
      double amax = 0.0;
      for (std::size_t c = 0; c < 32; ++c) amax = std::max(amax, std::fabs(static_cast<double>(xs[v](i, c))));
      for (std::size_t o = 0; o < 32; ++o) {
        // Bound: the weights moved by |A - Aq| exactly (known), each activation by at most amax / 254
        // (1/127 here, leaving room for f32 rounding).
        double bound = 0.0;
        for (std::size_t r = 0; r < modules[v].rank(); ++r) {
          double e = 0.0;
          for (std::size_t c = 0; c < 32; ++c)
            e += std::fabs(a(r, c) - aq(r, c)) * std::fabs(xs[v](i, c)) + std::fabs(aq(r, c)) * amax / 127.0;
          bound += std::fabs(b(o, r)) * e;
        }
        bound = modules[v].scale() * bound + f32_bound(modules[v], xs[v], i, o);
        REQUIRE(std::fabs(y(3 * i + v, o) - deltas[v](i, o)) <= bound);
      }
    }
  }
}

TEST_CASE("PEFT -> persona -> PEFT keeps the adapter", "[io][peft]") {
  const auto dir = std::filesystem::temp_directory_path() / ("persona_peft_" + std::to_string(::getpid()));
  const LoraAdapter original = read_peft_adapter(kData / "patterns", kPublicTenant);
  write_peft_adapter(original, dir);
  const LoraAdapter again = read_peft_adapter(dir, kPublicTenant);
  REQUIRE(again.modules().size() == original.modules().size());
  for (const auto& [target, module] : original.modules()) {
    const LoraModule* back = again.find(target.layer, target.module);
    REQUIRE(back != nullptr);
    CHECK(back->rank() == module.rank());
    CHECK(back->alpha() == module.alpha());
    CHECK(back->scaling() == module.scaling());
    const Tensor<float> a0 = module.a().to_f32(), a1 = back->a().to_f32();
    CHECK(std::memcmp(a0.data(), a1.data(), a0.numel() * sizeof(float)) == 0);
    const Tensor<float> b0 = module.b().to_f32(), b1 = back->b().to_f32();
    CHECK(std::memcmp(b0.data(), b1.data(), b0.numel() * sizeof(float)) == 0);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("An adapter keeps its model's layer path from PEFT to the persona file and back to PEFT", "[io][peft]") {
  const auto dir = std::filesystem::temp_directory_path() / ("persona_peft_path_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string key = "base_model.model.model.language_model.layers.3.self_attn.q_proj.lora_";
  SafetensorsWriter weights;
  weights.add(key + "A.weight", Tensor<float>({4, 8}));
  weights.add(key + "B.weight", Tensor<float>({8, 4}));
  weights.write(dir / "adapter_model.safetensors");
  std::ofstream(dir / "adapter_config.json") << R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8})";
  const LoraAdapter read = read_peft_adapter(dir, 1);
  CHECK(read.layers_path() == "model.language_model.layers");
  REQUIRE(read.find(3, "self_attn.q_proj") != nullptr);
  // PEFT's own layout adapters keep the default.
  CHECK(read_peft_adapter(kData / "plain", 1).layers_path() == "model.layers");
  // The writer writes the path it read, so PEFT loads the tensors back where they came from.
  write_peft_adapter(read, dir / "out");
  const SafetensorsReader written = SafetensorsReader::open(dir / "out" / "adapter_model.safetensors");
  CHECK(written.contains(key + "A.weight"));
  CHECK(written.contains(key + "B.weight"));
  // The persona file keeps it too.
  write_persona_adapter(read, dir / "a.persona");
  CHECK(read_persona_adapter(dir / "a.persona").layers_path() == "model.language_model.layers");
  std::filesystem::remove_all(dir);
}

TEST_CASE("What persona cannot honour is an Error naming the field", "[io][peft]") {
  PERSONA_REQUIRE_ERROR(read_peft_adapter(kData / "modules_to_save", kPublicTenant), unsupported,
                        "modules_to_save is [\"lm_head\"]");
  // A trained lm_head changes every output: skip_unsupported does not drop it either.
  PERSONA_REQUIRE_ERROR(
      read_peft_adapter(kData / "modules_to_save", kPublicTenant, PeftReadOptions{.id = "", .skip_unsupported = true}),
      unsupported, "which persona does not serve");
  PERSONA_REQUIRE_ERROR(read_peft_adapter(kData / "missing", kPublicTenant), io_error, "adapter_config.json");
  // Pickles are never unpickled; a folder of named adapters says which it holds.
  const auto dir = std::filesystem::temp_directory_path() / ("persona_peft_kinds_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "pickled");
  std::ofstream(dir / "pickled" / "adapter_config.json") << R"({"peft_type": "LORA", "r": 4})";
  std::ofstream(dir / "pickled" / "adapter_model.bin") << "PK";
  PERSONA_REQUIRE_ERROR(read_peft_adapter(dir / "pickled", kPublicTenant), unsupported,
                        "adapter_model.bin is a pickle file");
  std::filesystem::create_directories(dir / "named");
  std::filesystem::copy(kData / "plain", dir / "named" / "formal");
  std::filesystem::copy(kData / "rslora", dir / "named" / "casual");
  PERSONA_REQUIRE_ERROR(read_peft_adapter(dir / "named", kPublicTenant), not_found,
                        "holds named adapters (casual, formal)");
  CHECK(read_peft_adapter(dir / "named" / "casual", kPublicTenant).modules().size() > 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("Corrupt PEFT folders are Errors naming the file and the key", "[io][peft]") {
  const auto dir = std::filesystem::temp_directory_path() / ("persona_peft_bad_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto write_config = [&](const std::string& text) { std::ofstream(dir / "adapter_config.json") << text; };
  const std::string a_key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
  const std::string b_key = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";

  SafetensorsWriter only_a;
  only_a.add(a_key, Tensor<float>({4, 8}));
  only_a.write(dir / "adapter_model.safetensors");
  write_config(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8})");
  PERSONA_REQUIRE_ERROR(read_peft_adapter(dir, kPublicTenant), corrupt_data,
                        "q_proj.lora_A.weight' has no matching lora_B");

  SafetensorsWriter both;
  both.add(a_key, Tensor<float>({4, 8}));
  both.add(b_key, Tensor<float>({8, 4}));
  both.write(dir / "adapter_model.safetensors");
  write_config(R"({"peft_type": "LORA", "r": 16, "lora_alpha": 8})");
  PERSONA_REQUIRE_ERROR(read_peft_adapter(dir, kPublicTenant), corrupt_data,
                        "has rank 4 (B: 4) but the config says 16");
  write_config(R"({"peft_type": "LORA", "r": "four"})");
  PERSONA_REQUIRE_ERROR(read_peft_adapter(dir, kPublicTenant), corrupt_data, "wrong type");
  // Pattern keys are regular expressions, as PEFT matches them (it writes some itself, e.g. ".*\\.gate_up_proj");
  // an invalid one is an Error naming it, a catastrophic one costs bounded time.
  write_config(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "rank_pattern": {"q_proj(": 2}})");
  PERSONA_REQUIRE_ERROR(read_peft_adapter(dir, kPublicTenant), corrupt_data,
                        "rank_pattern key 'q_proj(' is not a valid regular expression");
  write_config(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "alpha_pattern": {"(a|aa)+$|(x+x+)+y": 2}})");
  CHECK(read_peft_adapter(dir, kPublicTenant).find(0, "self_attn.q_proj")->alpha() == 8.0f);
  write_config(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "rank_pattern": {"((.)*)*\\d{9}": 2}})");
  PERSONA_REQUIRE_ERROR(read_peft_adapter(dir, kPublicTenant), corrupt_data, "within PCRE2's limits");
  write_config(R"({"peft_type": "LORA", "r": 8, "lora_alpha": 8, "rank_pattern": {".*\\.q_pr.j": 4}})");
  CHECK(read_peft_adapter(dir, kPublicTenant).find(0, "self_attn.q_proj")->rank() == 4);
  write_config(R"({"peft_type": "LORA", "r": 8, "lora_alpha": 8, "rank_pattern": {"layers\\.[0-3]\\..*q_proj": 4}})");
  CHECK(read_peft_adapter(dir, kPublicTenant).find(0, "self_attn.q_proj")->rank() == 4);
  // The first key in file order wins, as in PEFT (sorted keys would try "q_proj" before "self.*").
  write_config(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "alpha_pattern": {"q_proj": 2, "self.*": 3}})");
  CHECK(read_peft_adapter(dir, kPublicTenant).find(0, "self_attn.q_proj")->alpha() == 2.0f);
  write_config(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "alpha_pattern": {"self.*": 3, "q_proj": 2}})");
  CHECK(read_peft_adapter(dir, kPublicTenant).find(0, "self_attn.q_proj")->alpha() == 3.0f);
  write_config(R"({"peft_type": "LORA", "r": 8, "lora_alpha": 8, "rank_pattern": {"layers.0.self_attn.q_proj": 4}})");
  CHECK(read_peft_adapter(dir, kPublicTenant).find(0, "self_attn.q_proj")->rank() == 4);  // a suffix after '.' matches
  write_config(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "rank_pattern": {"attn.q_proj": 8}})");
  CHECK(read_peft_adapter(dir, kPublicTenant).find(0, "self_attn.q_proj")->rank() ==
        4);  // "self_attn" != "attn": no match
  write_config("{not json");
  PERSONA_REQUIRE_ERROR(read_peft_adapter(dir, kPublicTenant), corrupt_data, "not a JSON object");
  write_config(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8})");
  CHECK(read_peft_adapter(dir, kPublicTenant).modules().size() == 1);
  CHECK(read_peft_adapter(dir, 9).tenant() == 9);  // the owner named in the call

  // Two stacks whose layers meet at one layer and module (T5's and Whisper's encoder and decoder, a vision
  // tower beside the language model): an Error naming both keys, never one silently replacing the other
  // or an A of one paired with a B of the other.
  const std::string encoder = "base_model.model.model.encoder.layers.0.self_attn.q_proj.lora_";
  const std::string decoder = "base_model.model.model.decoder.layers.0.self_attn.q_proj.lora_";
  for (const bool crossed : {false, true}) {
    SafetensorsWriter towers;
    towers.add(encoder + "A.weight", Tensor<float>({4, 8}));
    if (!crossed) towers.add(encoder + "B.weight", Tensor<float>({8, 4}));
    if (!crossed) towers.add(decoder + "A.weight", Tensor<float>({4, 8}));
    towers.add(decoder + "B.weight", Tensor<float>({8, 4}));
    towers.write(dir / "adapter_model.safetensors");
    INFO((crossed ? "encoder A with decoder B" : "both stacks whole"));
    PERSONA_REQUIRE_ERROR(read_peft_adapter(dir, kPublicTenant), unsupported,
                          "adapt layers under 'model.encoder.layers' and 'model.decoder.layers'");
    try {
      (void)read_peft_adapter(dir, kPublicTenant);
    } catch (const Error& e) {
      CHECK_THAT(e.message(), Catch::Contains("encoder.layers.0") && Catch::Contains("decoder.layers.0"));
    }
  }
  SafetensorsWriter vision;  // LLaVA: the vision tower's layers next to the language model's
  vision.add(a_key, Tensor<float>({4, 8}));
  vision.add(b_key, Tensor<float>({8, 4}));
  vision.add("base_model.model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.lora_A.weight",
             Tensor<float>({4, 8}));
  vision.write(dir / "adapter_model.safetensors");
  PERSONA_REQUIRE_ERROR(read_peft_adapter(dir, kPublicTenant), unsupported,
                        "vision_tower.vision_model.encoder.layers.0");
  std::filesystem::remove_all(dir);
}

TEST_CASE("persona adapter files round-trip quantized adapters and verify their checksum", "[io][persona]") {
  const auto dir = std::filesystem::temp_directory_path() / ("persona_file_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const LoraAdapter peft =
      read_peft_adapter(kData / "patterns", 42, PeftReadOptions{.id = "tenant-adapter", .skip_unsupported = false});
  LoraAdapter mixed("tenant-adapter", 42);
  const QuantSpec int4{4, 32, false, DType::bf16}, nf4 = QuantSpec::nf4(32);
  bool first = true;
  for (const auto& [target, m] : peft.modules()) {
    // A quantized (int4 asym bf16 scales or NF4, alternating), B f32 (ranks below 32).
    const QuantSpec& spec = first ? int4 : nf4;
    first = !first;
    // down_proj's A has 48 columns, not a multiple of 32: it stays f32.
    LoraMatrix a = m.a().cols() % 32 == 0 ? LoraMatrix(quantize(m.a().to_f32(), spec)) : m.a();
    mixed.add(target, LoraModule(std::move(a), m.b(), m.alpha(), m.scaling()));
  }
  const auto path = dir / "a.persona";
  write_persona_adapter(mixed, path);
  const LoraAdapter back = read_persona_adapter(path);
  CHECK(back.id() == "tenant-adapter");
  CHECK(back.tenant() == 42);
  REQUIRE(back.modules().size() == mixed.modules().size());
  for (const auto& [target, m] : mixed.modules()) {
    const LoraModule* b = back.find(target.layer, target.module);
    REQUIRE(b != nullptr);
    CHECK(b->a().format() == m.a().format());
    CHECK(b->alpha() == m.alpha());
    REQUIRE(b->a().bytes() == m.a().bytes());
    const Tensor<float> a0 = m.a().to_f32(), a1 = b->a().to_f32();
    CHECK(std::memcmp(a0.data(), a1.data(), a0.numel() * sizeof(float)) == 0);
    if (const auto* q0 = m.a().quantized_matrix()) {
      CHECK(std::memcmp(q0->codes().data(), b->a().quantized_matrix()->codes().data(), q0->bytes()) == 0);
    }
  }
  CHECK(std::filesystem::file_size(path) <
        std::filesystem::file_size(kData / "patterns" / "adapter_model.safetensors"));

  // f16 and bf16 storage of the unquantized matrices: each element reads back as its rounding to 16 bits
  // (the scalar conversion is the oracle), quantized ones byte for byte.
  for (const DType storage : {DType::f16, DType::bf16}) {
    const auto narrow_path = dir / fmt::format("{}.persona", name_of(storage));
    write_persona_adapter(mixed, narrow_path, storage);
    CHECK(SafetensorsReader::open(narrow_path).metadata().at("persona.version") == "3");
    const LoraAdapter narrowed = read_persona_adapter(narrow_path);
    for (const auto& [target, m] : mixed.modules()) {
      const LoraModule* b = narrowed.find(target.layer, target.module);
      REQUIRE(b != nullptr);
      REQUIRE(b->b().format() == "f32");
      const Tensor<float> want = m.b().to_f32(), got = b->b().to_f32();
      REQUIRE(got.shape() == want.shape());
      std::size_t wrong = 0;
      for (std::size_t i = 0; i < want.numel(); ++i) {
        const float rounded = storage == DType::f16 ? f16_bits_to_f32(f32_to_f16_bits(want.data()[i]))
                                                    : bf16_bits_to_f32(f32_to_bf16_bits(want.data()[i]));
        wrong += got.data()[i] != rounded ? 1 : 0;
      }
      CHECK(wrong == 0);
      CHECK(b->a().format() == m.a().format());
    }
    CHECK(std::filesystem::file_size(narrow_path) < std::filesystem::file_size(path));
  }
  PERSONA_REQUIRE_ERROR(write_persona_adapter(mixed, dir / "i8.persona", DType::i8), invalid_argument,
                        "float_storage is i8");
  {  // a value f16 cannot hold is refused, not stored as infinity
    Tensor<float> a({2, 8}), b({4, 2});
    b.data()[3] = 70000.0f;
    LoraAdapter big("big", 1);
    big.add({0, "q"}, LoraModule(LoraMatrix(std::move(a)), LoraMatrix(std::move(b)), 2.0f));
    PERSONA_REQUIRE_ERROR(write_persona_adapter(big, dir / "big.persona", DType::f16), invalid_argument,
                          "element 3 is 70000, which f16 cannot hold");
    write_persona_adapter(big, dir / "big.persona", DType::bf16);  // bf16 has f32's range
    CHECK(read_persona_adapter(dir / "big.persona").find(0, "q")->b().to_f32().data()[3] == 70144.0f);
  }
  CHECK(SafetensorsReader::open(path).metadata().at("persona.version") == "3");

  // Any flipped byte in the data section is caught.
  std::vector<char> bytes(std::filesystem::file_size(path));
  std::ifstream(path, std::ios::binary).read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  for (std::size_t from_end : {1, 100, 1000}) {
    auto corrupt = bytes;
    corrupt[corrupt.size() - from_end] ^= 0x10;
    std::ofstream(dir / "bad.persona", std::ios::binary)
        .write(corrupt.data(), static_cast<std::streamsize>(corrupt.size()));
    PERSONA_REQUIRE_ERROR(read_persona_adapter(dir / "bad.persona"), corrupt_data, "checksum mismatch");
  }
  // A newer version is refused, naming both versions; a PEFT file is not a persona file.
  SafetensorsWriter newer;
  newer.set_metadata("persona.format", "persona-lora-adapter");
  newer.set_metadata("persona.version", "7");
  newer.write(dir / "newer.persona");
  PERSONA_REQUIRE_ERROR(read_persona_adapter(dir / "newer.persona"), unsupported,
                        "version 7 is newer than this persona reads (version 3)");
  PERSONA_REQUIRE_ERROR(read_persona_adapter(kData / "plain" / "adapter_model.safetensors"), corrupt_data,
                        "__metadata__ has no 'persona.format'");
  std::filesystem::remove_all(dir);
}

TEST_CASE("DoRA adapters match PEFT through lora_linear and merge", "[io][peft][lora]") {
  const LoraAdapter adapter = read_peft_adapter(kData / "dora", kPublicTenant);
  const SafetensorsReader expected = SafetensorsReader::open(kData / "dora" / "expected.safetensors");
  const auto cases = recorded(expected);
  REQUIRE(cases.size() == 2);
  for (const Case& c : cases) {
    INFO(c.key);
    const LoraModule* module = adapter.find(c.layer, c.module);
    REQUIRE(module != nullptr);
    REQUIRE(module->dora());
    const Tensor<float> x = expected.read_f32(c.key + ".x");
    const Tensor<float> delta = expected.read_f32(c.key + ".delta");
    const Tensor<float> w = expected.read_f32(c.key + ".base");
    Tensor<float> base_out({x.dim(0), w.dim(0)}), abs_base({x.dim(0), w.dim(0)});
    matmul_ref(x, w, base_out, Transpose::yes);
    Tensor<float> abs_x = x, abs_w = w;
    for (float& v : abs_x.span()) v = std::fabs(v);
    for (float& v : abs_w.span()) v = std::fabs(v);
    matmul_ref(abs_x, abs_w, abs_base, Transpose::yes);
    const Tensor<float> row_scale = dora_row_scale(*module, w);

    const std::vector<std::int32_t> slots(x.dim(0), 0);
    const LoraPlanInput one{module};
    Tensor<float> y({x.dim(0), w.dim(0)});
    lora_linear(x, WeightMatrix(w), y, one.slots, plan_lora_batch(slots, 1));
    // PEFT: y - x W^T = (n - 1) x W^T + n scale B A x. Bound: f32 rounding of every sum involved.
    for (std::size_t t = 0; t < x.dim(0); ++t) {
      for (std::size_t o = 0; o < w.dim(0); ++o) {
        const double bound = 1e-5 * std::fabs(row_scale(o)) * (abs_base(t, o) + lora_abs_sum(*module, x, t, o)) + 1e-6;
        REQUIRE(std::fabs((y(t, o) - base_out(t, o)) - delta(t, o)) <= bound);
      }
    }
    // The same with the base weight quantized: DoRA's norms come from the dequantized weight, as PEFT
    // does for quantized layers.
    const QuantizedMatrix wq = quantize(w, QuantSpec{8, 32, true});
    Tensor<float> yq({x.dim(0), w.dim(0)});
    lora_linear(x, WeightMatrix(wq), yq, one.slots, plan_lora_batch(slots, 1));
    for (std::size_t i = 0; i < y.numel(); ++i) REQUIRE(yq.data()[i] == Approx(y.data()[i]).margin(0.05));

    // apply_lora cannot run DoRA (no base weight); merging gives the same layer; unmerging is refused.
    Tensor<float> lora_only({x.dim(0), w.dim(0)});
    PERSONA_REQUIRE_ERROR(apply_lora(x, lora_only, one.slots, plan_lora_batch(slots, 1)), unsupported,
                          "use lora_linear");
    Tensor<float> merged = w, merged_out({x.dim(0), w.dim(0)});
    merge_lora(merged, *module);
    matmul_ref(x, merged, merged_out, Transpose::yes);
    for (std::size_t i = 0; i < y.numel(); ++i) REQUIRE(merged_out.data()[i] == Approx(y.data()[i]).margin(1e-4));
    PERSONA_REQUIRE_ERROR(unmerge_lora(merged, *module), unsupported, "cannot be unmerged");
  }

  // DoRA survives both file formats.
  const auto dir = std::filesystem::temp_directory_path() / ("persona_dora_" + std::to_string(::getpid()));
  write_peft_adapter(adapter, dir / "peft");
  write_persona_adapter(adapter, dir / "a.persona");
  for (const LoraAdapter& back :
       {read_peft_adapter(dir / "peft", kPublicTenant), read_persona_adapter(dir / "a.persona")}) {
    for (const auto& [target, module] : adapter.modules()) {
      const LoraModule* b = back.find(target.layer, target.module);
      REQUIRE(b != nullptr);
      REQUIRE(b->dora());
      CHECK(std::memcmp(b->dora_magnitude().data(), module.dora_magnitude().data(),
                        module.out_features() * sizeof(float)) == 0);
    }
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("convert_peft_adapter: one call from a PEFT folder to a verified persona file", "[io][peft]") {
  const auto dir = std::filesystem::temp_directory_path() / ("persona_convert_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  for (const char* variant : {"patterns", "dora"}) {
    INFO(variant);
    const QuantSpec spec{4, 32, true};
    const std::filesystem::path out = dir / (std::string(variant) + ".persona");
    const PeftConversionReport report = convert_peft_adapter(kData / variant, out, kPublicTenant, spec);
    const LoraAdapter peft = read_peft_adapter(kData / variant, kPublicTenant);
    const LoraAdapter converted = read_persona_adapter(out);
    CHECK(report.persona_bytes == std::filesystem::file_size(out));
    CHECK(report.peft_bytes == std::filesystem::file_size(kData / variant / "adapter_model.safetensors"));
    REQUIRE(report.modules.size() == peft.modules().size());
    REQUIRE(converted.modules().size() == peft.modules().size());
    for (const auto& [target, module] : peft.modules()) {
      // The file holds exactly what quantize_lora makes of the PEFT module, DoRA magnitudes included.
      const LoraModule expected = quantize_lora(module, spec);
      const LoraModule* got = converted.find(target.layer, target.module);
      REQUIRE(got != nullptr);
      CHECK(got->scale() == expected.scale());
      CHECK(got->a().format() == expected.a().format());
      CHECK(got->b().format() == expected.b().format());
      const Tensor<float> ga = got->a().to_f32(), ea = expected.a().to_f32();
      const Tensor<float> gb = got->b().to_f32(), eb = expected.b().to_f32();
      CHECK(std::memcmp(ga.data(), ea.data(), ga.numel() * sizeof(float)) == 0);
      CHECK(std::memcmp(gb.data(), eb.data(), gb.numel() * sizeof(float)) == 0);
      CHECK(got->dora() == module.dora());
      const LoraQuantReport& r = report.modules.at(target);
      CHECK(r.a_spec.has_value() == got->a().quantized());
      CHECK(r.b_spec.has_value() == got->b().quantized());
    }
  }
  PERSONA_REQUIRE_ERROR(convert_peft_adapter(dir / "missing", dir / "x.persona", kPublicTenant, QuantSpec{}), io_error,
                        "missing");
  std::filesystem::remove_all(dir);
}
