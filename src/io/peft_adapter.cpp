#include "persona/io/peft_adapter.hpp"

#include "io/peft_pattern.hpp"
#include "persona/core/file_io.hpp"
#include "persona/io/safetensors.hpp"

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

namespace persona {
namespace {

constexpr std::string_view kKeyPrefix = "base_model.model.";
constexpr std::string_view kLayersMarker = "layers.";

struct PeftConfig {
  std::size_t r = 8;
  double lora_alpha = 8.0;
  bool use_rslora = false;
  bool use_dora = false;
  detail::PeftPatterns rank_pattern, alpha_pattern;  // in file order, as PEFT tries them
  std::vector<std::string> target_parameters;        // parameters adapted through ParamWrapper (fused experts)
  std::vector<std::string> modules_to_save;

  std::size_t rank_of(std::string_view name) const {
    return rank_pattern.find(name).has_value() ? static_cast<std::size_t>(*rank_pattern.find(name)) : r;
  }
  double alpha_of(std::string_view name) const { return alpha_pattern.find(name).value_or(lora_alpha); }
};

// adapter_config.json is a few KB; a larger one is not PEFT's (and /dev/zero is not a file).
constexpr std::size_t kMaxConfigBytes = 16u << 20;

std::string read_text(const std::filesystem::path& path) {
  const std::vector<std::byte> bytes = read_file(path, kMaxConfigBytes);
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

PeftConfig parse_config(std::string_view text, const std::filesystem::path& path) {
  // ordered_json: rank_pattern and alpha_pattern keys are tried in file order, as PEFT does.
  const nlohmann::ordered_json json = nlohmann::ordered_json::parse(text.begin(), text.end(), nullptr, false);
  if (json.is_discarded() || !json.is_object())
    PERSONA_THROW_AT("read_peft_adapter", corrupt_data, "{}: not a JSON object", path.string());
  auto field = [&](const char* name) -> const nlohmann::ordered_json* {
    const auto it = json.find(name);
    return it == json.end() || it->is_null() ? nullptr : &*it;
  };
  if (const auto* type = field("peft_type"); type != nullptr && *type != "LORA") {
    PERSONA_THROW_AT("read_peft_adapter", unsupported, "{}: peft_type is {}, only LORA is supported", path.string(),
                     type->dump());
  }
  // What changes the adapted model's outputs and persona does not apply is refused, whatever the options:
  // dropping it would serve a different model than the one trained.
  if (const auto* bias = field("bias"); bias != nullptr && *bias != "none") {
    PERSONA_THROW_AT("read_peft_adapter", unsupported,
                     "{}: bias is {}: the adapter trains the base model's biases, which persona does not apply",
                     path.string(), bias->dump());
  }
  if (const auto* bias = field("lora_bias"); bias != nullptr && bias->is_boolean() && bias->get<bool>()) {
    PERSONA_THROW_AT("read_peft_adapter", unsupported,
                     "{}: lora_bias is true: the adapter's lora_B layers have biases, which persona does not apply",
                     path.string());
  }
  if (const auto* tokens = field("trainable_token_indices"); tokens != nullptr && !tokens->empty()) {
    PERSONA_THROW_AT("read_peft_adapter", unsupported,
                     "{}: trainable_token_indices: the adapter retrains embedding rows, which persona does not apply",
                     path.string());
  }
  PeftConfig config;
  try {
    if (const auto* r = field("r")) config.r = r->get<std::size_t>();
    if (const auto* alpha = field("lora_alpha")) config.lora_alpha = alpha->get<double>();
    if (const auto* rs = field("use_rslora")) config.use_rslora = rs->get<bool>();
    if (const auto* dora = field("use_dora")) config.use_dora = dora->get<bool>();
    if (const auto* p = field("rank_pattern")) {
      for (const auto& [k, v] : p->items()) {
        config.rank_pattern.add(k, static_cast<double>(v.get<std::size_t>()), "rank_pattern");
      }
    }
    if (const auto* p = field("alpha_pattern")) {
      for (const auto& [k, v] : p->items()) config.alpha_pattern.add(k, v.get<double>(), "alpha_pattern");
    }
    if (const auto* p = field("target_parameters")) config.target_parameters = p->get<std::vector<std::string>>();
    if (const auto* p = field("modules_to_save")) config.modules_to_save = p->get<std::vector<std::string>>();
  } catch (const nlohmann::ordered_json::exception& e) {
    PERSONA_THROW_AT("read_peft_adapter", corrupt_data, "{}: a field has the wrong type: {}", path.string(), e.what());
  } catch (const Error& e) {
    throw Error(e.code(), "read_peft_adapter", fmt::format("{}: {}", path.string(), e.message()));
  }
  return config;
}

struct ParsedKey {
  std::string layers_path;  // e.g. "model.layers"
  std::size_t layer;
  std::string module;     // e.g. "self_attn.q_proj"
  std::string peft_name;  // e.g. "model.layers.0.self_attn.q_proj"
  char matrix;            // 'A', 'B' or 'M' (the DoRA magnitude)
};

// "base_model.model.model.layers.<L>.<module>.lora_<A|B>.weight" or ".lora_magnitude_vector"; false
// for any other key.
bool parse_key(std::string_view key, ParsedKey& out) {
  if (!key.starts_with(kKeyPrefix)) return false;
  key.remove_prefix(kKeyPrefix.size());
  for (char m : {'A', 'B', 'M'}) {
    const std::string suffix = m == 'M' ? std::string(".lora_magnitude_vector") : fmt::format(".lora_{}.weight", m);
    if (!key.ends_with(suffix)) continue;
    const std::string_view name = key.substr(0, key.size() - suffix.size());
    const std::size_t at = name.find(kLayersMarker);
    if (at == std::string_view::npos || (at != 0 && name[at - 1] != '.')) return false;
    std::size_t layer = 0, i = at + kLayersMarker.size(), digits = 0;
    for (; i < name.size() && name[i] >= '0' && name[i] <= '9' && digits < 9; ++i, ++digits) {
      layer = layer * 10 + static_cast<std::size_t>(name[i] - '0');
    }
    if (digits == 0 || i >= name.size() || name[i] != '.' || i + 1 == name.size()) return false;
    out = {std::string(name.substr(0, at + kLayersMarker.size() - 1)), layer, std::string(name.substr(i + 1)),
           std::string(name), m};
    return true;
  }
  return false;
}

// Task heads PEFT keeps in modules_to_save for classification and QA models: a causal LM's generated
// tokens never read them, so skip_unsupported may drop them. Any other saved module (lm_head, a layer)
// changes the served output and is refused.
bool is_task_head(std::string_view module) {
  for (const std::string_view head : {"score", "classifier", "qa_outputs", "cls", "pooler"}) {
    if (module == head) return true;
  }
  return false;
}

// The wrappers PEFT nests around one fused experts module ("mlp.experts", its ".base_layer", ...): each
// adapts one [E, out, in] parameter with A [r*E, in] and B [out, r*E].
struct FusedWrapper {
  std::string a_key, b_key, peft_name;
};

// Splits the ParamWrapper factors of one fused parameter into per-expert modules: expert e's A is rows
// [e r, (e+1) r) of A and its B the columns j r... of B reshaped (out, r, E) (PEFT's get_delta_factors:
// column k E + e is rank k of expert e). gate_up_proj ([E, 2F, in]) becomes gate_proj (rows [0, F)) and
// up_proj (rows [F, 2F)), sharing A.
void add_fused_experts(LoraAdapter& adapter, std::size_t layer, const std::string& experts_path,
                       const std::string& parameter, const Tensor<float>& a, const Tensor<float>& b, std::size_t rank,
                       double alpha, LoraScaling scaling, const std::string& source) {
  const std::size_t experts = a.dim(0) / rank, in = a.dim(1), out = b.dim(0);
  const bool gate_up = parameter == "gate_up_proj";
  if (gate_up && out % 2 != 0) {
    PERSONA_THROW_AT("read_peft_adapter", corrupt_data, "{}: {}.{} has {} outputs; gate_up_proj needs an even count",
                     source, experts_path, parameter, out);
  }
  for (std::size_t e = 0; e < experts; ++e) {
    Tensor<float> ae({rank, in});
    std::copy_n(a.data() + e * rank * in, rank * in, ae.data());
    const auto b_rows = [&](std::size_t first, std::size_t rows) {
      Tensor<float> be({rows, rank});
      for (std::size_t o = 0; o < rows; ++o) {
        for (std::size_t k = 0; k < rank; ++k) be(o, k) = b(first + o, k * experts + e);
      }
      return be;
    };
    const auto add = [&](const char* projection, Tensor<float> a_e, Tensor<float> b_e) {
      adapter.add(
          LoraTarget{layer, fmt::format("{}.{}.{}", experts_path, e, projection)},
          LoraModule(LoraMatrix(std::move(a_e)), LoraMatrix(std::move(b_e)), static_cast<float>(alpha), scaling));
    };
    if (gate_up) {
      add("gate_proj", ae, b_rows(0, out / 2));
      add("up_proj", std::move(ae), b_rows(out / 2, out / 2));
    } else {
      add("down_proj", std::move(ae), b_rows(0, out));
    }
  }
}

// The adapter from the config text and the opened weights; `folder` names the files in errors.
LoraAdapter build_adapter(std::string_view config_json, const SafetensorsReader& weights, TenantId owner,
                          const PeftReadOptions& options, const std::filesystem::path& folder) {
  const auto config_path = folder / "adapter_config.json";
  const std::string weights_path = weights.source();
  const PeftConfig config = parse_config(config_json, config_path);
  for (const std::string& module : config.modules_to_save) {
    if (!is_task_head(module) || !options.skip_unsupported) {
      PERSONA_THROW_AT("read_peft_adapter", unsupported,
                       "{}: modules_to_save is [\"{}\"]: the adapter replaces that module with a trained copy, "
                       "which persona does not serve{}",
                       config_path.string(), fmt::join(config.modules_to_save, "\", \""),
                       is_task_head(module) ? " (a task head: skip_unsupported drops it)" : "");
    }
  }
  struct Pair {
    std::string a_key, b_key, magnitude_key, peft_name;
  };
  std::map<LoraTarget, Pair> pairs;
  std::string layers_path, layers_path_key;  // the first tensor's, which every other must share
  // Fused experts (target_parameters): per (layer, experts module path), its wrappers outermost first.
  std::map<std::pair<std::size_t, std::string>, std::map<std::size_t, FusedWrapper>> fused;
  for (const SafetensorsTensor& t : weights.tensors()) {
    ParsedKey key;
    if (!parse_key(t.name, key)) {
      const std::string_view name =
          std::string_view(t.name).substr(t.name.starts_with(kKeyPrefix) ? kKeyPrefix.size() : 0);
      const std::string_view module = name.substr(0, name.find('.'));
      if (options.skip_unsupported && is_task_head(module) &&
          std::find(config.modules_to_save.begin(), config.modules_to_save.end(), module) !=
              config.modules_to_save.end()) {
        continue;
      }
      if (name.find("lora_embedding_") != std::string_view::npos || name.starts_with("lm_head.") ||
          name.find("embed_tokens.") != std::string_view::npos) {
        PERSONA_THROW_AT("read_peft_adapter", unsupported,
                         "{}: tensor '{}': LoRA on the embeddings or lm_head changes every output and persona does "
                         "not apply it yet",
                         weights_path, t.name);
      }
      PERSONA_THROW_AT("read_peft_adapter", unsupported,
                       "{}: tensor '{}' is not a LoRA A or B matrix or a DoRA magnitude of a decoder layer's "
                       "module; persona does not know what it changes",
                       weights_path, t.name);
    }
    // Two stacks of layers (an encoder's and a decoder's, a vision tower's beside the language model's)
    // are not one model's decoder: refused, naming a tensor of each.
    if (layers_path.empty()) {
      layers_path = key.layers_path;
      layers_path_key = t.name;
    } else if (key.layers_path != layers_path) {
      PERSONA_THROW_AT("read_peft_adapter", unsupported,
                       "{}: tensors '{}' and '{}' adapt layers under '{}' and '{}': persona reads one stack of "
                       "decoder layers (encoder-decoder models and vision towers are not supported)",
                       weights_path, layers_path_key, t.name, layers_path, key.layers_path);
    }
    // A ParamWrapper around fused experts: "<...>.experts[.base_layer...]".
    std::string_view module = key.module;
    std::size_t depth = 0;
    while (module.ends_with(".base_layer")) {
      module.remove_suffix(std::string_view(".base_layer").size());
      ++depth;
    }
    if (!config.target_parameters.empty() && (module == "experts" || module.ends_with(".experts"))) {
      if (key.matrix == 'M') {
        PERSONA_THROW_AT("read_peft_adapter", corrupt_data, "{}: '{}': PEFT has no DoRA for target_parameters",
                         weights_path, t.name);
      }
      FusedWrapper& w = fused[{key.layer, std::string(module)}][depth];
      (key.matrix == 'A' ? w.a_key : w.b_key) = t.name;
      w.peft_name = key.peft_name.substr(0, key.peft_name.size() - (key.module.size() - module.size()));
      continue;
    }
    Pair& pair = pairs[LoraTarget{key.layer, key.module}];
    std::string& slot = key.matrix == 'A' ? pair.a_key : key.matrix == 'B' ? pair.b_key : pair.magnitude_key;
    pair.peft_name = key.peft_name;
    slot = t.name;
  }
  const LoraScaling scaling = config.use_rslora ? LoraScaling::rank_stabilized : LoraScaling::standard;
  const auto read_pair = [&](const std::string& a_key, const std::string& b_key, Tensor<float>& a, Tensor<float>& b) {
    if (a_key.empty() || b_key.empty()) {
      PERSONA_THROW_AT("read_peft_adapter", corrupt_data, "{}: '{}' has no matching lora_{} tensor", weights_path,
                       a_key.empty() ? b_key : a_key, a_key.empty() ? 'A' : 'B');
    }
    a = weights.read_f32(a_key);
    b = weights.read_f32(b_key);
    if (a.rank() != 2 || b.rank() != 2)
      PERSONA_THROW_AT("read_peft_adapter", corrupt_data, "{}: '{}' or its lora_B is not a matrix", weights_path,
                       a_key);
  };
  LoraAdapter adapter(options.id.empty() ? folder.filename().string() : options.id, owner);
  if (!layers_path.empty()) adapter.set_layers_path(layers_path);
  for (auto& [target, pair] : pairs) {
    Tensor<float> a, b;
    read_pair(pair.a_key, pair.b_key, a, b);
    const std::size_t rank = config.rank_of(pair.peft_name);
    if (a.dim(0) != rank || b.dim(1) != rank) {
      PERSONA_THROW_AT("read_peft_adapter", corrupt_data, "{}: '{}' has rank {} (B: {}) but the config says {}",
                       weights_path, pair.a_key, a.dim(0), b.dim(1), rank);
    }
    Tensor<float> magnitude;
    if (config.use_dora != !pair.magnitude_key.empty()) {
      PERSONA_CHECK_AT("read_peft_adapter", corrupt_data, !config.use_dora,
                       "{}: use_dora is true but '{}' has no lora_magnitude_vector", weights_path, pair.a_key);
      PERSONA_THROW_AT("read_peft_adapter", corrupt_data, "{}: '{}' is present but use_dora is false", weights_path,
                       pair.magnitude_key);
    }
    if (config.use_dora) {
      magnitude = weights.read_f32(pair.magnitude_key);
      if (magnitude.rank() != 1 || magnitude.dim(0) != b.dim(0)) {
        PERSONA_THROW_AT("read_peft_adapter", corrupt_data, "{}: '{}' has shape {} but the module has {} outputs",
                         weights_path, pair.magnitude_key, magnitude.shape().to_string(), b.dim(0));
      }
    }
    adapter.add(target, LoraModule(LoraMatrix(std::move(a)), LoraMatrix(std::move(b)),
                                   static_cast<float>(config.alpha_of(pair.peft_name)), scaling, std::move(magnitude)));
  }
  for (const auto& [where, wrappers] : fused) {
    const auto& [layer, path] = where;
    // Which wrapper adapts which parameter: gate_up_proj's A reads the hidden size that down_proj writes
    // (B's rows), and its B writes twice the width down_proj's A reads.
    std::vector<std::pair<std::string, const FusedWrapper*>> adapted;
    std::vector<Tensor<float>> as, bs;
    for (const auto& [depth, w] : wrappers) {
      Tensor<float> a, b;
      read_pair(w.a_key, w.b_key, a, b);
      as.push_back(std::move(a));
      bs.push_back(std::move(b));
      adapted.emplace_back("", &w);
    }
    if (wrappers.size() == 2) {
      const auto is_gate_up = [&](std::size_t g, std::size_t d) {
        return bs[g].dim(0) == 2 * as[d].dim(1) && bs[d].dim(0) == as[g].dim(1);
      };
      if (is_gate_up(0, 1)) {
        adapted[0].first = "gate_up_proj";
        adapted[1].first = "down_proj";
      } else if (is_gate_up(1, 0)) {
        adapted[0].first = "down_proj";
        adapted[1].first = "gate_up_proj";
      }
    } else if (wrappers.size() == 1) {
      for (const std::string& p : config.target_parameters) {
        const std::string_view name =
            std::string_view(p).substr(p.rfind('.') == std::string::npos ? 0 : p.rfind('.') + 1);
        if (config.target_parameters.size() == 1 && (name == "gate_up_proj" || name == "down_proj")) {
          adapted[0].first = std::string(name);
        }
      }
    }
    for (std::size_t i = 0; i < adapted.size(); ++i) {
      const FusedWrapper& w = *adapted[i].second;
      if (adapted[i].first.empty()) {
        PERSONA_THROW_AT("read_peft_adapter", unsupported,
                         "{}: '{}': target_parameters {} on '{}' are not the gate_up_proj and down_proj of fused "
                         "experts persona knows",
                         weights_path, w.a_key, fmt::join(config.target_parameters, ", "), w.peft_name);
      }
      const std::string name = w.peft_name + "." + adapted[i].first;
      const std::size_t rank = config.rank_of(name);
      if (rank == 0 || as[i].dim(0) % rank != 0 || as[i].dim(0) == 0 || bs[i].dim(1) != as[i].dim(0)) {
        PERSONA_THROW_AT("read_peft_adapter", corrupt_data,
                         "{}: '{}' is [{}, {}] and its lora_B [{}, {}]: not rank {} times a number of experts",
                         weights_path, w.a_key, as[i].dim(0), as[i].dim(1), bs[i].dim(0), bs[i].dim(1), rank);
      }
      add_fused_experts(adapter, layer, path, adapted[i].first, as[i], bs[i], rank, config.alpha_of(name), scaling,
                        weights_path);
    }
  }
  return adapter;
}

}  // namespace

LoraAdapter read_peft_adapter(const std::filesystem::path& folder, TenantId owner, const PeftReadOptions& options) {
  std::error_code ec;
  if (!std::filesystem::exists(folder / "adapter_config.json", ec)) {
    // PEFT saves several named adapters of one model as subfolders, each a folder of its own.
    std::vector<std::string> named;
    for (const auto& entry : std::filesystem::directory_iterator(folder, ec)) {
      if (entry.is_directory(ec) && std::filesystem::exists(entry.path() / "adapter_config.json", ec)) {
        named.push_back(entry.path().filename().string());
      }
    }
    std::sort(named.begin(), named.end());
    if (!named.empty()) {
      PERSONA_THROW_AT("read_peft_adapter", not_found,
                       "{} holds named adapters ({}): read one of its subfolders, each a PEFT adapter folder",
                       folder.string(), fmt::join(named, ", "));
    }
  }
  if (!std::filesystem::exists(folder / "adapter_model.safetensors", ec) &&
      std::filesystem::exists(folder / "adapter_model.bin", ec)) {
    PERSONA_THROW_AT("read_peft_adapter", unsupported,
                     "{}: adapter_model.bin is a pickle file, which persona does not read (unpickling runs code): "
                     "re-save the adapter with save_pretrained(..., safe_serialization=True)",
                     folder.string());
  }
  const std::string config = read_text(folder / "adapter_config.json");
  // Read, not mapped: the folder is someone else's, and a mapped file truncated under us would be SIGBUS.
  const std::filesystem::path weights_path = folder / "adapter_model.safetensors";
  const std::vector<std::byte> bytes = read_file(weights_path);
  const SafetensorsReader weights = SafetensorsReader::parse(bytes, weights_path.string());
  PeftReadOptions named = options;
  if (named.id.empty()) named.id = folder.filename().string();
  return build_adapter(config, weights, owner, named, folder);
}

LoraAdapter read_peft_adapter(std::string_view config_json, std::span<const std::byte> safetensors, TenantId owner,
                              const PeftReadOptions& options, const std::filesystem::path& source) {
  const SafetensorsReader weights =
      SafetensorsReader::parse(safetensors, (source / "adapter_model.safetensors").string());
  return build_adapter(config_json, weights, owner, options, source);
}

namespace {

template <class T>
T most_common(const std::map<T, std::size_t>& counts) {
  auto best = counts.begin();
  for (auto it = counts.begin(); it != counts.end(); ++it) {
    if (it->second > best->second) best = it;
  }
  return best->first;
}

}  // namespace

void write_peft_adapter(const LoraAdapter& adapter, const std::filesystem::path& folder) {
  PERSONA_CHECK(!adapter.modules().empty(), "adapter '{}' has no modules to write", adapter.id());
  std::map<std::size_t, std::size_t> ranks;
  std::map<float, std::size_t> alphas;
  std::set<std::string> targets;
  const LoraScaling scaling = adapter.modules().begin()->second.scaling();
  const bool dora = adapter.modules().begin()->second.dora();
  for (const auto& [target, module] : adapter.modules()) {
    PERSONA_CHECK_CODE(unsupported, module.scaling() == scaling,
                       "adapter '{}' mixes LoRA and rsLoRA scaling, which PEFT's use_rslora cannot express",
                       adapter.id());
    PERSONA_CHECK_CODE(unsupported, module.dora() == dora,
                       "adapter '{}' mixes DoRA and plain modules, which PEFT's use_dora cannot express", adapter.id());
    ++ranks[module.rank()];
    ++alphas[module.alpha()];
    const std::size_t dot = target.module.rfind('.');
    targets.insert(dot == std::string::npos ? target.module : target.module.substr(dot + 1));
  }
  const std::size_t r = most_common(ranks);
  const float alpha = most_common(alphas);
  nlohmann::ordered_json config = {{"peft_type", "LORA"},
                                   {"r", r},
                                   {"lora_alpha", alpha},
                                   {"use_rslora", scaling == LoraScaling::rank_stabilized},
                                   {"target_modules", targets},
                                   {"rank_pattern", nlohmann::ordered_json::object()},
                                   {"alpha_pattern", nlohmann::ordered_json::object()},
                                   {"bias", "none"},
                                   {"use_dora", dora},
                                   {"fan_in_fan_out", false},
                                   {"lora_dropout", 0.0},
                                   {"modules_to_save", nullptr},
                                   {"task_type", nullptr}};
  SafetensorsWriter weights;
  weights.set_metadata("format", "pt");
  for (const auto& [target, module] : adapter.modules()) {
    const std::string name = fmt::format("{}.{}.{}", adapter.layers_path(), target.layer, target.module);
    // Full names with an anchor-free regex match only this module (PEFT matches "(.*\.)?(name)$").
    if (module.rank() != r) config["rank_pattern"][name] = module.rank();
    if (module.alpha() != alpha) config["alpha_pattern"][name] = module.alpha();
    weights.add(fmt::format("base_model.model.{}.lora_A.weight", name), module.a().to_f32());
    weights.add(fmt::format("base_model.model.{}.lora_B.weight", name), module.b().to_f32());
    if (dora) weights.add(fmt::format("base_model.model.{}.lora_magnitude_vector", name), module.dora_magnitude());
  }
  std::filesystem::create_directories(folder);
  weights.write(folder / "adapter_model.safetensors");
  const std::string text = config.dump(2) + "\n";
  write_file_atomically(folder / "adapter_config.json",
                        std::span(reinterpret_cast<const std::byte*>(text.data()), text.size()));
}

}  // namespace persona
