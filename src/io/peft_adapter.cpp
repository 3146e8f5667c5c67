#include "persona/io/peft_adapter.hpp"

#include "persona/core/file_io.hpp"
#include "persona/io/safetensors.hpp"

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
  std::vector<std::pair<std::string, std::size_t>> rank_pattern;  // in file order, as PEFT tries them
  std::vector<std::pair<std::string, double>> alpha_pattern;
};

// A pattern key as PEFT writes them: a module name or suffix. Only these characters are accepted, so the
// regex PEFT builds from a key ("(.*\.)?(key)$") has no quantifiers or groups, and matching it is the
// linear loop below ('.' matching any character), never a regex engine fed with file contents.
bool is_plain_pattern_key(std::string_view key) {
  return !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.';
  });
}

bool matches_whole(std::string_view text, std::string_view key) {
  if (text.size() != key.size()) return false;
  for (std::size_t i = 0; i < key.size(); ++i) {
    if (key[i] != '.' && key[i] != text[i]) return false;
  }
  return true;
}

// PEFT's get_pattern_key: the first key k (in file order) for which the module name matches
// "(.*\.)?(k)$": k itself, or k right after a literal '.'.
template <class Value>
const Value* pattern_value(const std::vector<std::pair<std::string, Value>>& patterns, std::string_view module_name) {
  for (const auto& [key, value] : patterns) {
    if (matches_whole(module_name, key)) return &value;
    for (std::size_t p = 1; p + key.size() <= module_name.size(); ++p) {
      if (module_name[p - 1] == '.' && matches_whole(module_name.substr(p), key)) return &value;
    }
  }
  return nullptr;
}

// adapter_config.json is a few KB; a larger one is not PEFT's (and /dev/zero is not a file).
constexpr std::size_t kMaxConfigBytes = 16u << 20;

std::string read_text(const std::filesystem::path& path) {
  const std::vector<std::byte> bytes = read_file(path, kMaxConfigBytes);
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

PeftConfig parse_config(std::string_view text, const std::filesystem::path& path, const PeftReadOptions& options) {
  const nlohmann::json json = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  if (json.is_discarded() || !json.is_object())
    PERSONA_THROW_AT("read_peft_adapter", corrupt_data, "{}: not a JSON object", path.string());
  auto field = [&](const char* name) -> const nlohmann::json* {
    const auto it = json.find(name);
    return it == json.end() || it->is_null() ? nullptr : &*it;
  };
  if (const auto* type = field("peft_type"); type != nullptr && *type != "LORA") {
    PERSONA_THROW_AT("read_peft_adapter", unsupported, "{}: peft_type is {}, only LORA is supported", path.string(),
                     type->dump());
  }
  if (!options.skip_unsupported) {
    if (const auto* bias = field("bias"); bias != nullptr && *bias != "none") {
      PERSONA_THROW_AT("read_peft_adapter", unsupported, "{}: bias is {}: bias training is not supported",
                       path.string(), bias->dump());
    }
    if (const auto* bias = field("lora_bias"); bias != nullptr && bias->is_boolean() && bias->get<bool>()) {
      PERSONA_THROW_AT("read_peft_adapter", unsupported, "{}: lora_bias is true: LoRA biases are not supported",
                       path.string());
    }
    if (const auto* saved = field("modules_to_save"); saved != nullptr && !saved->empty()) {
      PERSONA_THROW_AT("read_peft_adapter", unsupported,
                       "{}: modules_to_save is {}: full module copies are not supported (skip_unsupported drops them)",
                       path.string(), saved->dump());
    }
  }
  PeftConfig config;
  try {
    if (const auto* r = field("r")) config.r = r->get<std::size_t>();
    if (const auto* alpha = field("lora_alpha")) config.lora_alpha = alpha->get<double>();
    if (const auto* rs = field("use_rslora")) config.use_rslora = rs->get<bool>();
    if (const auto* dora = field("use_dora")) config.use_dora = dora->get<bool>();
    if (const auto* p = field("rank_pattern")) {
      for (const auto& [k, v] : p->items()) config.rank_pattern.emplace_back(k, v.get<std::size_t>());
    }
    if (const auto* p = field("alpha_pattern")) {
      for (const auto& [k, v] : p->items()) config.alpha_pattern.emplace_back(k, v.get<double>());
    }
  } catch (const nlohmann::json::exception& e) {
    PERSONA_THROW_AT("read_peft_adapter", corrupt_data, "{}: a field has the wrong type: {}", path.string(), e.what());
  }
  auto check_keys = [&](const auto& patterns, const char* field_name) {
    for (const auto& [key, value] : patterns) {
      if (!is_plain_pattern_key(key)) {
        PERSONA_THROW_AT(
            "read_peft_adapter", unsupported,
            "{}: {} key '{}' is not a module name (letters, digits, '_', '-', '.'): regex patterns are not "
            "supported",
            path.string(), field_name, key);
      }
    }
  };
  check_keys(config.rank_pattern, "rank_pattern");
  check_keys(config.alpha_pattern, "alpha_pattern");
  return config;
}

struct ParsedKey {
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
    out = {layer, std::string(name.substr(i + 1)), std::string(name), m};
    return true;
  }
  return false;
}

// The adapter from the config text and the opened weights; `folder` names the files in errors.
LoraAdapter build_adapter(std::string_view config_json, const SafetensorsReader& weights, TenantId owner,
                          const PeftReadOptions& options, const std::filesystem::path& folder) {
  const auto config_path = folder / "adapter_config.json";
  const std::filesystem::path weights_path = weights.source();
  const PeftConfig config = parse_config(config_json, config_path, options);
  struct Pair {
    std::string a_key, b_key, magnitude_key, peft_name;
  };
  std::map<LoraTarget, Pair> pairs;
  for (const SafetensorsTensor& t : weights.tensors()) {
    ParsedKey key;
    if (!parse_key(t.name, key)) {
      if (options.skip_unsupported) continue;
      PERSONA_THROW_AT("read_peft_adapter", unsupported,
                       "{}: tensor '{}' is not a LoRA A or B matrix or a DoRA magnitude of a decoder layer "
                       "(modules_to_save and bias tensors are not supported)",
                       weights_path.string(), t.name);
    }
    Pair& pair = pairs[LoraTarget{key.layer, key.module}];
    std::string& slot = key.matrix == 'A' ? pair.a_key : key.matrix == 'B' ? pair.b_key : pair.magnitude_key;
    // Two module paths that meet at one layer and module (an encoder's and a decoder's layers, a vision
    // tower's next to the language model's) would silently replace or cross-pair each other's matrices.
    if (!pair.peft_name.empty() && pair.peft_name != key.peft_name) {
      const std::string& other = !pair.a_key.empty()   ? pair.a_key
                                 : !pair.b_key.empty() ? pair.b_key
                                                       : pair.magnitude_key;
      PERSONA_THROW_AT("read_peft_adapter", unsupported,
                       "{}: tensors '{}' and '{}' both map to layer {} module {}: persona reads one stack of "
                       "decoder layers (encoder-decoder models and vision towers are not supported)",
                       weights_path.string(), other, t.name, key.layer, key.module);
    }
    pair.peft_name = key.peft_name;
    slot = t.name;
  }
  LoraAdapter adapter(options.id.empty() ? folder.filename().string() : options.id, owner);
  for (auto& [target, pair] : pairs) {
    if (pair.a_key.empty() || pair.b_key.empty()) {
      PERSONA_THROW_AT("read_peft_adapter", corrupt_data, "{}: '{}' has no matching lora_{} tensor",
                       weights_path.string(), pair.a_key.empty() ? pair.b_key : pair.a_key,
                       pair.a_key.empty() ? 'A' : 'B');
    }
    Tensor<float> a = weights.read_f32(pair.a_key), b = weights.read_f32(pair.b_key);
    if (a.rank() != 2 || b.rank() != 2)
      PERSONA_THROW_AT("read_peft_adapter", corrupt_data, "{}: '{}' or its lora_B is not a matrix",
                       weights_path.string(), pair.a_key);
    const std::size_t* pattern_rank = pattern_value(config.rank_pattern, pair.peft_name);
    const std::size_t rank = pattern_rank != nullptr ? *pattern_rank : config.r;
    if (a.dim(0) != rank || b.dim(1) != rank) {
      PERSONA_THROW_AT("read_peft_adapter", corrupt_data, "{}: '{}' has rank {} (B: {}) but the config says {}",
                       weights_path.string(), pair.a_key, a.dim(0), b.dim(1), rank);
    }
    Tensor<float> magnitude;
    if (config.use_dora != !pair.magnitude_key.empty()) {
      PERSONA_CHECK_AT("read_peft_adapter", corrupt_data, !config.use_dora,
                       "{}: use_dora is true but '{}' has no lora_magnitude_vector", weights_path.string(), pair.a_key);
      PERSONA_THROW_AT("read_peft_adapter", corrupt_data, "{}: '{}' is present but use_dora is false",
                       weights_path.string(), pair.magnitude_key);
    }
    if (config.use_dora) {
      magnitude = weights.read_f32(pair.magnitude_key);
      if (magnitude.rank() != 1 || magnitude.dim(0) != b.dim(0)) {
        PERSONA_THROW_AT("read_peft_adapter", corrupt_data, "{}: '{}' has shape {} but the module has {} outputs",
                         weights_path.string(), pair.magnitude_key, magnitude.shape().to_string(), b.dim(0));
      }
    }
    const double* pattern_alpha = pattern_value(config.alpha_pattern, pair.peft_name);
    const double alpha = pattern_alpha != nullptr ? *pattern_alpha : config.lora_alpha;
    adapter.add(target, LoraModule(LoraMatrix(std::move(a)), LoraMatrix(std::move(b)), static_cast<float>(alpha),
                                   config.use_rslora ? LoraScaling::rank_stabilized : LoraScaling::standard,
                                   std::move(magnitude)));
  }
  return adapter;
}

}  // namespace

LoraAdapter read_peft_adapter(const std::filesystem::path& folder, TenantId owner, const PeftReadOptions& options) {
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
    const std::string name = fmt::format("model.layers.{}.{}", target.layer, target.module);
    // Full names with an anchor-free regex match only this module (PEFT matches "(.*\.)?(name)$").
    if (module.rank() != r) config["rank_pattern"][name] = module.rank();
    if (module.alpha() != alpha) config["alpha_pattern"][name] = module.alpha();
    weights.add(fmt::format("base_model.{}.lora_A.weight", "model." + name), module.a().to_f32());
    weights.add(fmt::format("base_model.{}.lora_B.weight", "model." + name), module.b().to_f32());
    if (dora) weights.add(fmt::format("base_model.model.{}.lora_magnitude_vector", name), module.dora_magnitude());
  }
  std::filesystem::create_directories(folder);
  weights.write(folder / "adapter_model.safetensors");
  const std::string text = config.dump(2) + "\n";
  write_file_atomically(folder / "adapter_config.json",
                        std::span(reinterpret_cast<const std::byte*>(text.data()), text.size()));
}

}  // namespace persona
