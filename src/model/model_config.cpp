#include "persona/model/model_config.hpp"

#include "persona/core/error.hpp"
#include "persona/core/file_io.hpp"
#include "persona/kv/kv_cache_config.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <utility>

namespace persona {
namespace {

using Json = nlohmann::json;
constexpr const char* kFunction = "parse_model_config";

constexpr std::array<std::pair<std::string_view, ModelArchitecture>, 7> kArchitectures{{
    {"LlamaForCausalLM", ModelArchitecture::llama},
    {"MistralForCausalLM", ModelArchitecture::mistral},
    {"Qwen2ForCausalLM", ModelArchitecture::qwen2},
    {"Qwen3ForCausalLM", ModelArchitecture::qwen3},
    {"MixtralForCausalLM", ModelArchitecture::mixtral},
    {"Qwen2MoeForCausalLM", ModelArchitecture::qwen2_moe},
    {"Qwen3MoeForCausalLM", ModelArchitecture::qwen3_moe},
}};

// model_type of each architecture, in the order of kArchitectures.
constexpr std::array<std::string_view, 7> kModelTypes{"llama",   "mistral",   "qwen2",    "qwen3",
                                                      "mixtral", "qwen2_moe", "qwen3_moe"};

// Fields that change nothing persona computes: training settings, transformers' own bookkeeping, and
// the generation defaults old configs carried (sampling is the engine's).
const std::set<std::string, std::less<>> kIgnoredFields{"_attn_implementation",
                                                        "_commit_hash",
                                                        "_name_or_path",
                                                        "add_cross_attention",
                                                        "architectures",
                                                        "attention_dropout",
                                                        "auto_map",
                                                        "bad_words_ids",
                                                        "begin_suppress_tokens",
                                                        "chunk_size_feed_forward",
                                                        "cross_attention_hidden_size",
                                                        "decoder_start_token_id",
                                                        "diversity_penalty",
                                                        "do_sample",
                                                        "dtype",
                                                        "early_stopping",
                                                        "encoder_no_repeat_ngram_size",
                                                        "exponential_decay_length_penalty",
                                                        "finetuning_task",
                                                        "forced_bos_token_id",
                                                        "forced_eos_token_id",
                                                        "id2label",
                                                        "initializer_factor",
                                                        "initializer_range",
                                                        "is_decoder",
                                                        "is_encoder_decoder",
                                                        "label2id",
                                                        "length_penalty",
                                                        "max_length",
                                                        "min_length",
                                                        "model_type",
                                                        "no_repeat_ngram_size",
                                                        "num_beam_groups",
                                                        "num_beams",
                                                        "num_return_sequences",
                                                        "output_attentions",
                                                        "output_hidden_states",
                                                        "output_router_logits",
                                                        "output_scores",
                                                        "pad_token_id",
                                                        "prefix",
                                                        "pretraining_tp",
                                                        "problem_type",
                                                        "pruned_heads",
                                                        "remove_invalid_values",
                                                        "repetition_penalty",
                                                        "return_dict",
                                                        "return_dict_in_generate",
                                                        "router_aux_loss_coef",
                                                        "router_jitter_noise",
                                                        "sep_token_id",
                                                        "suppress_tokens",
                                                        "task_specific_params",
                                                        "temperature",
                                                        "tf_legacy_loss",
                                                        "tie_encoder_decoder",
                                                        "tokenizer_class",
                                                        "top_k",
                                                        "top_p",
                                                        "torch_dtype",
                                                        "torchscript",
                                                        "transformers_version",
                                                        "typical_p",
                                                        "use_bfloat16",
                                                        "use_cache"};

// Bounds that keep every size product far from overflow; real models sit well inside them.
constexpr std::size_t kMaxVocab = std::size_t{1} << 24;
constexpr std::size_t kMaxWidth = std::size_t{1} << 17;
constexpr std::size_t kMaxLayers = 1024;
constexpr std::size_t kMaxHeads = 1024;
constexpr std::size_t kMaxExperts = 4096;
constexpr std::size_t kMaxPositions = std::size_t{1} << 26;

// config.json's fields, each marked when read, so that what is left over can be refused by name.
class Fields {
 public:
  Fields(const Json& json, std::string_view source) : json_(json), source_(source) {}

  const Json* find(std::string_view name) {
    const auto it = json_.find(name);
    if (it == json_.end()) return nullptr;
    read_.emplace(name);
    return it->is_null() ? nullptr : &*it;
  }
  template <class T>
  std::optional<T> get(std::string_view name) {
    const Json* value = find(name);
    if (value == nullptr) return std::nullopt;
    return convert<T>(*value, name);
  }
  template <class T>
  T get_or(std::string_view name, T fallback) {
    return get<T>(name).value_or(fallback);
  }
  template <class T>
  T require(std::string_view name) {
    std::optional<T> value = get<T>(name);
    if (!value) PERSONA_THROW_AT(kFunction, corrupt_data, "{}: config.json has no {}", source_, name);
    return *value;
  }

  template <class T>
  T convert(const Json& value, std::string_view name) const {
    if constexpr (std::is_same_v<T, bool>) {
      if (value.is_boolean()) return value.get<bool>();
    } else if constexpr (std::is_same_v<T, std::size_t>) {
      if (value.is_number_unsigned()) return value.get<std::size_t>();
    } else if constexpr (std::is_same_v<T, double>) {
      if (value.is_number()) return value.get<double>();
    } else {
      if (value.is_string()) return value.get<std::string>();
    }
    PERSONA_THROW_AT(kFunction, corrupt_data, "{}: {} is {}; expected {}", source_, name, value.dump(),
                     std::is_same_v<T, bool>          ? "true or false"
                     : std::is_same_v<T, std::size_t> ? "a non-negative integer"
                     : std::is_same_v<T, double>      ? "a number"
                                                      : "a string");
  }

  // Every field not read and not known to be harmless: Error(unsupported) naming the first.
  void refuse_unread(std::string_view architecture) const {
    for (const auto& [name, value] : json_.items()) {
      if (value.is_null() || read_.contains(name) || kIgnoredFields.contains(name)) continue;
      PERSONA_THROW_AT(kFunction, unsupported,
                       "{}: config.json field '{}' ({}) is not supported for {}: persona does not know whether it "
                       "changes the model's outputs",
                       source_, name, value.dump().substr(0, 80), architecture);
    }
  }

  std::string_view source() const noexcept { return source_; }

 private:
  const Json& json_;
  std::string_view source_;
  std::set<std::string, std::less<>> read_;
};

Json parse_object(std::string_view text, std::string_view source, std::string_view file) {
  Json json = Json::parse(text.begin(), text.end(), nullptr, false);
  if (json.is_discarded() || !json.is_object()) {
    PERSONA_THROW_AT(kFunction, corrupt_data, "{}: {} is not a JSON object", source, file);
  }
  return json;
}

ModelArchitecture architecture_of(Fields& fields) {
  const Json* architectures = fields.find("architectures");
  std::string name;
  if (architectures != nullptr) {
    if (!architectures->is_array() || architectures->size() != 1 || !(*architectures)[0].is_string()) {
      PERSONA_THROW_AT(kFunction, unsupported, "{}: architectures is {}; expected one architecture name",
                       fields.source(), architectures->dump().substr(0, 200));
    }
    name = (*architectures)[0].get<std::string>();
  }
  const std::optional<std::string> model_type = fields.get<std::string>("model_type");
  for (std::size_t i = 0; i < kArchitectures.size(); ++i) {
    const auto& [class_name, architecture] = kArchitectures[i];
    if (architectures != nullptr ? name == class_name : model_type == kModelTypes[i]) {
      if (model_type && *model_type != kModelTypes[i]) {
        PERSONA_THROW_AT(kFunction, invalid_argument, "{}: architectures says {} but model_type says '{}'",
                         fields.source(), class_name, *model_type);
      }
      return architecture;
    }
  }
  PERSONA_THROW_AT(kFunction, unsupported,
                   "{}: architecture '{}' (model_type '{}') is not supported; persona runs LlamaForCausalLM, "
                   "MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MixtralForCausalLM, Qwen2MoeForCausalLM "
                   "and Qwen3MoeForCausalLM",
                   fields.source(), name, model_type.value_or(""));
}

float to_float(double value, std::string_view name, std::string_view source) {
  PERSONA_CHECK_AT(kFunction, invalid_argument,
                   std::isfinite(value) && std::fabs(value) <= std::numeric_limits<float>::max(),
                   "{}: {} is {}; expected a finite float", source, name, value);
  return static_cast<float>(value);
}

// rope_parameters (transformers 5) or rope_theta + rope_scaling (earlier), into a RopeConfig.
RopeConfig rope_of(Fields& fields, double default_theta) {
  const std::string_view source = fields.source();
  RopeConfig rope;
  const Json* parameters = fields.find("rope_parameters");
  const Json* legacy = fields.find("rope_scaling");
  if (parameters != nullptr && legacy != nullptr) {
    PERSONA_THROW_AT(kFunction, invalid_argument, "{}: both rope_parameters and rope_scaling are given", source);
  }
  double theta = fields.get_or<double>("rope_theta", default_theta);
  const double partial = fields.get_or<double>("partial_rotary_factor", 1.0);
  const Json* scaling = parameters != nullptr ? parameters : legacy;
  std::string type = "default";
  double factor = 1.0, low = 1.0, high = 4.0;
  std::size_t original = 0;
  double inner_partial = 1.0;
  if (scaling != nullptr) {
    if (!scaling->is_object()) {
      PERSONA_THROW_AT(kFunction, corrupt_data, "{}: {} is {}; expected an object", source,
                       parameters != nullptr ? "rope_parameters" : "rope_scaling", scaling->dump().substr(0, 80));
    }
    Fields inner(*scaling, source);
    const auto a = inner.get<std::string>("rope_type"), b = inner.get<std::string>("type");
    if (a && b && *a != *b) {
      PERSONA_THROW_AT(kFunction, invalid_argument, "{}: rope scaling says rope_type '{}' and type '{}'", source, *a,
                       *b);
    }
    type = a.value_or(b.value_or("default"));
    theta = inner.get_or<double>("rope_theta", theta);
    inner_partial = inner.get_or<double>("partial_rotary_factor", 1.0);
    if (type == "linear" || type == "llama3") factor = inner.require<double>("factor");
    if (type == "llama3") {
      low = inner.require<double>("low_freq_factor");
      high = inner.require<double>("high_freq_factor");
      original = inner.require<std::size_t>("original_max_position_embeddings");
    }
    if (type != "default" && type != "linear" && type != "llama3") {
      PERSONA_THROW_AT(kFunction, unsupported,
                       "{}: rope_type '{}' is not supported (persona implements default, linear and llama3)", source,
                       type);
    }
    inner.refuse_unread("rope scaling");
  }
  if (partial != 1.0 || inner_partial != 1.0) {
    PERSONA_THROW_AT(kFunction, unsupported, "{}: partial_rotary_factor {} is not supported (only 1)", source,
                     partial != 1.0 ? partial : inner_partial);
  }
  rope.theta = to_float(theta, "rope_theta", source);
  rope.scaling = type == "linear" ? RopeScaling::linear : type == "llama3" ? RopeScaling::llama3 : RopeScaling::none;
  rope.factor = to_float(factor, "rope factor", source);
  rope.low_freq_factor = to_float(low, "low_freq_factor", source);
  rope.high_freq_factor = to_float(high, "high_freq_factor", source);
  rope.original_max_positions = original;
  return rope;
}

std::vector<std::int32_t> token_ids(const Json& value, std::string_view name, std::string_view source) {
  std::vector<std::int32_t> ids;
  const auto add = [&](const Json& id) {
    if (!id.is_number_integer() || id.get<std::int64_t>() < 0 ||
        id.get<std::int64_t>() > std::numeric_limits<std::int32_t>::max()) {
      PERSONA_THROW_AT(kFunction, corrupt_data, "{}: {} holds {}; expected token ids", source, name,
                       id.dump().substr(0, 80));
    }
    ids.push_back(static_cast<std::int32_t>(id.get<std::int64_t>()));
  };
  if (value.is_array()) {
    for (const Json& id : value) add(id);
  } else if (!value.is_null()) {
    add(value);
  }
  return ids;
}

// Per layer: "full_attention" or "sliding_attention", as config.json's layer_types or derived.
std::vector<bool> sliding_layers(Fields& fields, std::size_t layers) {
  std::vector<bool> sliding(layers, false);
  const Json* types = fields.find("layer_types");
  if (types == nullptr) return {};
  if (!types->is_array() || types->size() != layers) {
    PERSONA_THROW_AT(kFunction, invalid_argument, "{}: layer_types must list the {} layers' attention types",
                     fields.source(), layers);
  }
  for (std::size_t l = 0; l < layers; ++l) {
    const Json& t = (*types)[l];
    if (t == "sliding_attention") {
      sliding[l] = true;
    } else if (t != "full_attention") {
      PERSONA_THROW_AT(kFunction, unsupported, "{}: layer_types[{}] is {}: only full_attention and sliding_attention",
                       fields.source(), l, t.dump().substr(0, 80));
    }
  }
  return sliding;
}

void parse_attention_window(Fields& fields, ModelConfig& c) {
  const std::size_t L = c.num_layers;
  c.attention_window.assign(L, 0);
  switch (c.architecture) {
    case ModelArchitecture::llama: return;
    case ModelArchitecture::mistral:
    case ModelArchitecture::mixtral:
      c.attention_window.assign(L, fields.get_or<std::size_t>("sliding_window", 0));
      return;
    default: break;
  }
  const bool use = fields.get_or<bool>("use_sliding_window", false);
  const std::size_t window = fields.get_or<std::size_t>("sliding_window", 0);
  if (c.architecture == ModelArchitecture::qwen3_moe) {
    if (use) c.attention_window.assign(L, window);
    if (use && window == 0) {
      PERSONA_THROW_AT(kFunction, invalid_argument, "{}: use_sliding_window is true but sliding_window is {}",
                       fields.source(), window);
    }
    return;
  }
  const std::size_t max_window_layers = fields.get_or<std::size_t>("max_window_layers", 28);
  std::vector<bool> sliding = sliding_layers(fields, L);
  if (sliding.empty()) {
    // transformers' defaults when config.json has no layer_types.
    sliding.assign(L, false);
    for (std::size_t l = 0; l < L && use; ++l) {
      sliding[l] = c.architecture == ModelArchitecture::qwen2_moe ? (l + 1) % 2 == 1 && l < max_window_layers
                                                                  : l >= max_window_layers;
    }
  }
  for (std::size_t l = 0; l < L; ++l) {
    if (!sliding[l] || !use) continue;
    if (window == 0) {
      PERSONA_THROW_AT(kFunction, invalid_argument, "{}: layer {} slides but sliding_window is 0 or null",
                       fields.source(), l);
    }
    c.attention_window[l] = window;
  }
}

void parse_moe(Fields& fields, ModelConfig& c) {
  if (c.architecture == ModelArchitecture::mixtral) {
    const auto local = fields.get<std::size_t>("num_local_experts"), alias = fields.get<std::size_t>("num_experts");
    c.num_experts = local.value_or(alias.value_or(8));
    c.experts_per_token = fields.get_or<std::size_t>("num_experts_per_tok", 2);
    c.moe_intermediate_size = c.intermediate_size;
    c.norm_topk_prob = true;
    c.sparse_layer.assign(c.num_layers, true);
    return;
  }
  const auto experts = fields.get<std::size_t>("num_experts");
  const auto local = fields.get<std::size_t>("num_local_experts");
  if (experts && local && *experts != *local) {
    PERSONA_THROW_AT(kFunction, invalid_argument, "{}: num_experts {} and num_local_experts {} disagree",
                     fields.source(), *experts, *local);
  }
  c.num_experts = experts.value_or(local.value_or(0));
  c.experts_per_token = fields.require<std::size_t>("num_experts_per_tok");
  c.moe_intermediate_size = fields.require<std::size_t>("moe_intermediate_size");
  c.norm_topk_prob = fields.get_or<bool>("norm_topk_prob", c.architecture == ModelArchitecture::qwen3_moe);
  if (c.architecture == ModelArchitecture::qwen2_moe) {
    c.shared_expert_intermediate_size = fields.require<std::size_t>("shared_expert_intermediate_size");
  }
  const std::size_t step = fields.get_or<std::size_t>("decoder_sparse_step", 1);
  PERSONA_CHECK_AT(kFunction, invalid_argument, step >= 1, "{}: decoder_sparse_step is 0; expected >= 1",
                   fields.source());
  std::vector<bool> dense(c.num_layers, false);
  if (const Json* only = fields.find("mlp_only_layers")) {
    if (!only->is_array()) {
      PERSONA_THROW_AT(kFunction, corrupt_data, "{}: mlp_only_layers is {}; expected a list of layers", fields.source(),
                       only->dump().substr(0, 80));
    }
    for (const Json& l : *only) {
      if (!l.is_number_unsigned() || l.get<std::size_t>() >= c.num_layers) {
        PERSONA_THROW_AT(kFunction, invalid_argument, "{}: mlp_only_layers holds {}; expected layers below {}",
                         fields.source(), l.dump().substr(0, 80), c.num_layers);
      }
      dense[l.get<std::size_t>()] = true;
    }
  }
  c.sparse_layer.resize(c.num_layers);
  for (std::size_t l = 0; l < c.num_layers; ++l) {
    c.sparse_layer[l] = !dense[l] && c.num_experts > 0 && (l + 1) % step == 0;
  }
}

void check_size(std::size_t value, std::size_t max, std::string_view name, std::string_view source) {
  PERSONA_CHECK_AT("ModelConfig::validate", invalid_argument, value >= 1 && value <= max,
                   "{}: {} is {}; expected 1..{}", source, name, value, max);
}

}  // namespace

std::string_view to_string(ModelArchitecture architecture) noexcept {
  for (const auto& [name, a] : kArchitectures) {
    if (a == architecture) return name;
  }
  return "unknown";
}

RouterConfig ModelConfig::router_config() const {
  PERSONA_CHECK(is_moe(), "{} is a dense model: it has no router", to_string(architecture));
  RouterConfig router = RouterConfig::qwen3_moe(num_experts, experts_per_token, norm_topk_prob);
  if (shared_expert_intermediate_size != 0) {
    router.shared_experts = 1;
    router.shared_gate = SharedExpertGate::sigmoid;
  }
  return router;
}

void ModelConfig::validate() const {
  const std::string_view source = to_string(architecture);
  check_size(vocab_size, kMaxVocab, "vocab_size", source);
  check_size(hidden_size, kMaxWidth, "hidden_size", source);
  check_size(num_layers, kMaxLayers, "num_hidden_layers", source);
  check_size(num_heads, kMaxHeads, "num_attention_heads", source);
  check_size(num_kv_heads, num_heads, "num_key_value_heads", source);
  PERSONA_CHECK(num_heads % num_kv_heads == 0, "{}: num_attention_heads {} is not a multiple of num_key_value_heads {}",
                source, num_heads, num_kv_heads);
  PERSONA_CHECK(head_dim >= 2 && head_dim <= kMaxHeadDim && head_dim % 2 == 0,
                "{}: head_dim is {}; expected an even number in 2..{}", source, head_dim, kMaxHeadDim);
  PERSONA_CHECK(rms_norm_eps > 0.0f && std::isfinite(rms_norm_eps), "{}: rms_norm_eps is {}; expected > 0", source,
                rms_norm_eps);
  check_size(max_position_embeddings, kMaxPositions, "max_position_embeddings", source);
  (void)rope_inverse_frequencies(rope, head_dim);
  PERSONA_CHECK(attention_window.size() == num_layers, "{}: {} attention windows for {} layers", source,
                attention_window.size(), num_layers);
  const bool dense_layers =
      !is_moe() || std::find(sparse_layer.begin(), sparse_layer.end(), false) != sparse_layer.end();
  if (dense_layers) check_size(intermediate_size, kMaxWidth * 8, "intermediate_size", source);
  if (is_moe()) {
    check_size(num_experts, kMaxExperts, "num_experts", source);
    PERSONA_CHECK(experts_per_token >= 1 && experts_per_token <= num_experts,
                  "{}: num_experts_per_tok is {}; expected 1..num_experts ({})", source, experts_per_token,
                  num_experts);
    check_size(moe_intermediate_size, kMaxWidth * 8, "moe_intermediate_size", source);
    if (shared_expert_intermediate_size != 0) {
      check_size(shared_expert_intermediate_size, kMaxWidth * 8, "shared_expert_intermediate_size", source);
    }
    PERSONA_CHECK(sparse_layer.size() == num_layers, "{}: {} sparse-layer flags for {} layers", source,
                  sparse_layer.size(), num_layers);
  }
  for (const std::int32_t id : eos_token_ids) {
    PERSONA_CHECK(static_cast<std::size_t>(id) < vocab_size, "{}: eos_token_id {} is outside the vocabulary of {}",
                  source, id, vocab_size);
  }
}

ModelConfig parse_model_config(std::string_view config_json, std::string_view generation_config_json,
                               std::string_view source) {
  const Json json = parse_object(config_json, source, "config.json");
  Fields fields(json, source);
  ModelConfig c;
  c.architecture = architecture_of(fields);
  const ModelArchitecture a = c.architecture;
  const bool moe =
      a == ModelArchitecture::mixtral || a == ModelArchitecture::qwen2_moe || a == ModelArchitecture::qwen3_moe;
  c.vocab_size = fields.require<std::size_t>("vocab_size");
  c.hidden_size = fields.require<std::size_t>("hidden_size");
  c.intermediate_size = fields.get_or<std::size_t>("intermediate_size", 0);
  c.num_layers = fields.require<std::size_t>("num_hidden_layers");
  c.num_heads = fields.require<std::size_t>("num_attention_heads");
  c.num_kv_heads = fields.get_or<std::size_t>("num_key_value_heads", c.num_heads);
  if (const auto head_dim = fields.get<std::size_t>("head_dim")) {
    c.head_dim = *head_dim;
  } else {
    PERSONA_CHECK_AT(kFunction, invalid_argument, c.num_heads != 0 && c.hidden_size % c.num_heads == 0,
                     "{}: hidden_size {} is not a multiple of num_attention_heads {} (and no head_dim is given)",
                     source, c.hidden_size, c.num_heads);
    c.head_dim = c.hidden_size / c.num_heads;
  }
  c.rms_norm_eps = to_float(fields.get_or<double>("rms_norm_eps", 1e-6), "rms_norm_eps", source);
  c.max_position_embeddings = fields.get_or<std::size_t>("max_position_embeddings", 2048);
  c.rope = rope_of(fields, a == ModelArchitecture::mixtral ? 1e6 : 1e4);
  c.tie_word_embeddings = fields.get_or<bool>("tie_word_embeddings", false);
  if (const auto act = fields.get<std::string>("hidden_act"); act && *act != "silu") {
    PERSONA_THROW_AT(kFunction, unsupported, "{}: hidden_act '{}' is not supported (only silu)", source, *act);
  }
  if (fields.find("quantization_config") != nullptr) {
    PERSONA_THROW_AT(kFunction, unsupported,
                     "{}: quantization_config: pre-quantized Hugging Face checkpoints (GPTQ, AWQ, bitsandbytes, "
                     "FP8) are not read; load the bf16/f16/f32 model and let persona quantize it",
                     source);
  }
  switch (a) {
    case ModelArchitecture::llama:
      c.qkv_bias = c.o_bias = fields.get_or<bool>("attention_bias", false);
      c.mlp_bias = fields.get_or<bool>("mlp_bias", false);
      break;
    case ModelArchitecture::qwen3:
    case ModelArchitecture::qwen3_moe:
      c.qkv_bias = c.o_bias = fields.get_or<bool>("attention_bias", false);
      c.qk_norm = true;
      break;
    case ModelArchitecture::qwen2: c.qkv_bias = true; break;
    case ModelArchitecture::qwen2_moe: c.qkv_bias = fields.get_or<bool>("qkv_bias", true); break;
    default: break;
  }
  parse_attention_window(fields, c);
  if (moe) parse_moe(fields, c);
  if (const Json* bos = fields.find("bos_token_id")) {
    const std::vector<std::int32_t> ids = token_ids(*bos, "bos_token_id", source);
    if (ids.size() == 1) c.bos_token_id = ids[0];
  }
  if (const Json* eos = fields.find("eos_token_id")) c.eos_token_ids = token_ids(*eos, "eos_token_id", source);
  fields.refuse_unread(to_string(a));

  // generation_config.json's eos ids are what generate() stops on; they take precedence.
  if (!generation_config_json.empty()) {
    const Json generation = parse_object(generation_config_json, source, "generation_config.json");
    if (const auto it = generation.find("eos_token_id"); it != generation.end() && !it->is_null()) {
      c.eos_token_ids = token_ids(*it, "generation_config.json eos_token_id", source);
    }
  }
  std::sort(c.eos_token_ids.begin(), c.eos_token_ids.end());
  c.eos_token_ids.erase(std::unique(c.eos_token_ids.begin(), c.eos_token_ids.end()), c.eos_token_ids.end());
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(e.code(), kFunction, fmt::format("{}: {}", source, e.message()));
  }
  return c;
}

ModelConfig read_model_config(const std::filesystem::path& folder) {
  // config.json is a few KB; a larger one is not a model's.
  constexpr std::size_t kMaxConfigBytes = 16u << 20;
  const auto text = [&](const std::filesystem::path& path) {
    const std::vector<std::byte> bytes = read_file(path, kMaxConfigBytes);
    return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  };
  const std::filesystem::path generation = folder / "generation_config.json";
  std::error_code ec;
  const std::string generation_text = std::filesystem::exists(generation, ec) ? text(generation) : std::string();
  return parse_model_config(text(folder / "config.json"), generation_text, folder.string());
}

}  // namespace persona
