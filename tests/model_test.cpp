// config.json of every supported architecture: the fixtures transformers 5 wrote (tests/data/models), the
// older format published checkpoints carry, and configs persona must refuse with an Error naming the field.
#include "test_support.hpp"

#include <persona/core/error.hpp>
#include <persona/model/model_config.hpp>

#include <filesystem>
#include <string>

using namespace persona;

namespace {

const std::filesystem::path kModels = PERSONA_TEST_DATA_DIR "/models";

// A Llama 3.1 8B config.json as the Hub publishes it (transformers 4.43 format).
constexpr const char* kLlama31 = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu",
  "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama", "num_attention_heads": 32,
  "num_hidden_layers": 32, "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 128256})";

// Qwen1.5-MoE-A2.7B's (transformers 4.40 format).
constexpr const char* kQwen15Moe = R"({
  "architectures": ["Qwen2MoeForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "decoder_sparse_step": 1, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 2048,
  "initializer_range": 0.02, "intermediate_size": 5632, "max_position_embeddings": 8192,
  "max_window_layers": 21, "model_type": "qwen2_moe", "moe_intermediate_size": 1408, "norm_topk_prob": false,
  "num_attention_heads": 16, "num_experts": 60, "num_experts_per_tok": 4, "num_hidden_layers": 24,
  "num_key_value_heads": 16, "output_router_logits": false, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
  "router_aux_loss_coef": 0.001, "shared_expert_intermediate_size": 5632, "sliding_window": 32768,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.39.0.dev0",
  "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})";

constexpr const char* kTiny = R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 96,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128)";

// kTiny with more fields (a JSON fragment such as `"x": 1`).
std::string tiny(const std::string& extra) { return std::string(kTiny) + (extra.empty() ? "}" : ", " + extra + "}"); }

std::string tiny_moe(const std::string& extra) {
  return std::string(R"({"architectures": ["Qwen3MoeForCausalLM"], "hidden_size": 64, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128, "moe_intermediate_size": 32,
    "intermediate_size": 96, "num_experts": 8, "num_experts_per_tok": 2)") +
         (extra.empty() ? "}" : ", " + extra + "}");
}

}  // namespace

TEST_CASE("The fixture configs of every architecture parse as transformers reads them", "[model]") {
  const ModelConfig llama = read_model_config(kModels / "llama");
  CHECK(llama.architecture == ModelArchitecture::llama);
  CHECK(llama.vocab_size == 96);
  CHECK(llama.hidden_size == 32);
  CHECK(llama.num_layers == 2);
  CHECK(llama.num_heads == 4);
  CHECK(llama.num_kv_heads == 2);
  CHECK(llama.head_dim == 8);
  CHECK(llama.rope.scaling == RopeScaling::llama3);
  CHECK(llama.rope.theta == 500000.0f);
  CHECK(llama.rope.factor == 8.0f);
  CHECK(llama.rope.original_max_positions == 16);
  CHECK(llama.eos_token_ids == std::vector<std::int32_t>{0, 95});
  CHECK(llama.bos_token_id == 1);
  CHECK(!llama.tie_word_embeddings);
  CHECK(!llama.is_moe());

  const ModelConfig tied = read_model_config(kModels / "llama_tied");
  CHECK(tied.tie_word_embeddings);
  CHECK(tied.qkv_bias);
  CHECK(tied.o_bias);
  CHECK(tied.mlp_bias);
  CHECK(tied.rope.scaling == RopeScaling::linear);
  CHECK(tied.rope.factor == 2.0f);

  const ModelConfig mistral = read_model_config(kModels / "mistral");
  CHECK(mistral.attention_window == std::vector<std::size_t>{6, 6});

  const ModelConfig qwen2 = read_model_config(kModels / "qwen2");
  CHECK(qwen2.qkv_bias);
  CHECK(!qwen2.o_bias);
  CHECK(qwen2.attention_window == std::vector<std::size_t>{0, 0});

  const ModelConfig qwen3 = read_model_config(kModels / "qwen3");
  CHECK(qwen3.qk_norm);
  CHECK(qwen3.head_dim == 16);
  CHECK(qwen3.q_width() == 64);
  CHECK(qwen3.attention_window == std::vector<std::size_t>{0, 5});

  const ModelConfig mixtral = read_model_config(kModels / "mixtral");
  CHECK(mixtral.num_experts == 4);
  CHECK(mixtral.experts_per_token == 2);
  CHECK(mixtral.moe_intermediate_size == 48);
  CHECK(mixtral.rope.theta == 1e6f);
  CHECK(mixtral.sparse_layer == std::vector<bool>{true, true});
  const RouterConfig mixtral_router = mixtral.router_config();
  CHECK(mixtral_router.renormalize);
  CHECK(mixtral_router.scoring == RouterScoring::softmax);
  CHECK(mixtral_router.shared_experts == 0);

  const ModelConfig qwen2_moe = read_model_config(kModels / "qwen2_moe");
  CHECK(qwen2_moe.shared_expert_intermediate_size == 24);
  CHECK(qwen2_moe.qkv_bias);
  const RouterConfig shared = qwen2_moe.router_config();
  CHECK(!shared.renormalize);
  CHECK(shared.shared_experts == 1);
  CHECK(shared.shared_gate == SharedExpertGate::sigmoid);
  CHECK(shared.top_k == 2);

  const ModelConfig qwen3_moe = read_model_config(kModels / "qwen3_moe");
  CHECK(qwen3_moe.num_experts == 4);  // transformers 5 writes num_local_experts
  CHECK(qwen3_moe.norm_topk_prob);
  CHECK(qwen3_moe.qk_norm);
  CHECK(qwen3_moe.sparse_layer == std::vector<bool>{true, false});
  CHECK(qwen3_moe.router_config().renormalize);
  PERSONA_REQUIRE_ERROR(llama.router_config(), invalid_argument, "dense model");
}

TEST_CASE("Configs in the format published checkpoints carry parse too", "[model]") {
  const ModelConfig llama = parse_model_config(kLlama31, "", "llama-3.1-8b");
  CHECK(llama.head_dim == 128);
  CHECK(llama.num_kv_heads == 8);
  CHECK(llama.rope.scaling == RopeScaling::llama3);
  CHECK(llama.rope.theta == 500000.0f);
  CHECK(llama.rope.low_freq_factor == 1.0f);
  CHECK(llama.rope.high_freq_factor == 4.0f);
  CHECK(llama.rope.original_max_positions == 8192);
  CHECK(llama.rms_norm_eps == 1e-5f);
  CHECK(llama.eos_token_ids == std::vector<std::int32_t>{128001, 128008, 128009});
  // generation_config.json's eos ids win.
  CHECK(parse_model_config(kLlama31, R"({"eos_token_id": 128009, "temperature": 0.6})").eos_token_ids ==
        std::vector<std::int32_t>{128009});

  const ModelConfig qwen = parse_model_config(kQwen15Moe, "");
  CHECK(qwen.num_experts == 60);
  CHECK(qwen.experts_per_token == 4);
  CHECK(qwen.shared_expert_intermediate_size == 5632);
  CHECK(!qwen.norm_topk_prob);
  CHECK(qwen.attention_window == std::vector<std::size_t>(24, 0));  // use_sliding_window false
  CHECK(qwen.sparse_layer == std::vector<bool>(24, true));

  // The legacy rope_scaling "type" spelling and a top-level rope_theta.
  const ModelConfig linear = parse_model_config(tiny(R"("rope_theta": 20000.0, "rope_scaling": {"type": "linear",
    "factor": 4.0})"),
                                                "");
  CHECK(linear.rope.scaling == RopeScaling::linear);
  CHECK(linear.rope.factor == 4.0f);
  CHECK(linear.rope.theta == 20000.0f);
  // Qwen2's default sliding layers: those at or past max_window_layers.
  const ModelConfig sliding = parse_model_config(
      R"({"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 4,
      "num_attention_heads": 4, "vocab_size": 128, "use_sliding_window": true, "sliding_window": 16,
      "max_window_layers": 2})",
      "");
  CHECK(sliding.attention_window == std::vector<std::size_t>{0, 0, 16, 16});
  CHECK(sliding.num_kv_heads == 4);  // defaults to the query heads
  // decoder_sparse_step and mlp_only_layers pick the MoE layers as transformers does.
  CHECK(parse_model_config(tiny_moe(R"("decoder_sparse_step": 2, "mlp_only_layers": [3])"), "").sparse_layer ==
        std::vector<bool>{false, true, false, false});
}

TEST_CASE("Configs persona cannot run exactly are refused, naming the field", "[model]") {
  PERSONA_REQUIRE_ERROR(parse_model_config(R"({"architectures": ["DeepseekV3ForCausalLM"], "hidden_size": 7})", ""),
                        unsupported, "architecture 'DeepseekV3ForCausalLM'");
  PERSONA_REQUIRE_ERROR(parse_model_config(R"({"model_type": "gemma2"})", ""), unsupported, "model_type 'gemma2'");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny(R"("model_type": "qwen2")"), ""), invalid_argument,
                        "model_type says 'qwen2'");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny(R"("rope_scaling": {"rope_type": "yarn", "factor": 4.0})"), ""),
                        unsupported, "rope_type 'yarn'");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny(R"("rope_scaling": {"rope_type": "dynamic", "factor": 2.0})"), ""),
                        unsupported, "rope_type 'dynamic'");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny(R"("rope_parameters": {"rope_type": "linear", "factor": 2.0,
    "mscale": 1.5})"),
                                           ""),
                        unsupported, "'mscale'");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny(R"("partial_rotary_factor": 0.5)"), ""), unsupported,
                        "partial_rotary_factor");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny(R"("hidden_act": "gelu")"), ""), unsupported, "hidden_act 'gelu'");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny(R"("quantization_config": {"quant_method": "gptq"})"), ""), unsupported,
                        "quantization_config");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny(R"("logit_softcapping": 30.0)"), ""), unsupported,
                        "'logit_softcapping'");
  // A field another architecture interprets is unknown to this one.
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny(R"("num_experts": 8)"), ""), unsupported,
                        "'num_experts' (8) is not supported for LlamaForCausalLM");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny(R"("layer_types": ["full_attention", "chunked_attention"])"), ""),
                        unsupported, "'layer_types'");
  // Harmless fields are ignored; null ones too.
  CHECK_NOTHROW(
      parse_model_config(tiny(R"("initializer_range": 0.02, "torch_dtype": "bfloat16", "sliding_window": null)"), ""));
}

TEST_CASE("Contradicting or out-of-range config values are a clear Error", "[model]") {
  PERSONA_REQUIRE_ERROR(parse_model_config("not json", ""), corrupt_data, "config.json is not a JSON object");
  PERSONA_REQUIRE_ERROR(parse_model_config("[1, 2]", ""), corrupt_data, "not a JSON object");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny(""), "{"), corrupt_data, "generation_config.json");
  PERSONA_REQUIRE_ERROR(parse_model_config(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64})", ""),
                        corrupt_data, "no vocab_size");
  PERSONA_REQUIRE_ERROR(parse_model_config(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": "64",
    "vocab_size": 1})",
                                           ""),
                        corrupt_data, "hidden_size is \"64\"; expected a non-negative integer");
  PERSONA_REQUIRE_ERROR(parse_model_config(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 66,
    "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 128})",
                                           ""),
                        invalid_argument, "hidden_size 66 is not a multiple of num_attention_heads 4");
  PERSONA_REQUIRE_ERROR(parse_model_config(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
    "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 3,
    "vocab_size": 128})",
                                           ""),
                        invalid_argument, "not a multiple of num_key_value_heads 3");
  PERSONA_REQUIRE_ERROR(parse_model_config(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
    "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 8,
    "vocab_size": 128})",
                                           ""),
                        invalid_argument, "num_key_value_heads is 8; expected 1..4");
  PERSONA_REQUIRE_ERROR(
      parse_model_config(R"({"architectures": ["Qwen3MoeForCausalLM"], "hidden_size": 64, "num_hidden_layers": 4,
    "num_attention_heads": 4, "vocab_size": 128, "moe_intermediate_size": 32, "intermediate_size": 96,
    "num_experts": 8, "num_experts_per_tok": 9})",
                         ""),
      invalid_argument, "num_experts_per_tok is 9; expected 1..num_experts (8)");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny_moe(R"("num_local_experts": 4)"), ""), invalid_argument,
                        "num_experts 8 and num_local_experts 4 disagree");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny_moe(R"("mlp_only_layers": [4])"), ""), invalid_argument,
                        "mlp_only_layers holds 4; expected layers below 4");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny_moe(R"("decoder_sparse_step": 0)"), ""), invalid_argument,
                        "decoder_sparse_step is 0");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny(R"("head_dim": 1024)"), ""), invalid_argument, "head_dim is 1024");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny(R"("num_hidden_layers": 0)"), ""), invalid_argument,
                        "num_hidden_layers is 0; expected 1..1024");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny(R"("rms_norm_eps": -1.0)"), ""), invalid_argument, "rms_norm_eps");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny(R"("eos_token_id": 128)"), ""), invalid_argument,
                        "eos_token_id 128 is outside the vocabulary of 128");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny(R"("eos_token_id": [1, -2])"), ""), corrupt_data, "token ids");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny(R"("rope_scaling": {"rope_type": "llama3", "factor": 8.0})"), ""),
                        corrupt_data, "no low_freq_factor");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny(R"("rope_scaling": {"rope_type": "linear", "factor": 0.5})"), ""),
                        invalid_argument, "factor must be finite and >= 1");
  PERSONA_REQUIRE_ERROR(parse_model_config(tiny(R"("rope_theta": 1e300)"), ""), invalid_argument, "rope_theta");
  PERSONA_REQUIRE_ERROR(
      parse_model_config(R"({"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "intermediate_size": 96,
      "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 128, "use_sliding_window": true,
      "sliding_window": 0, "max_window_layers": 0})",
                         ""),
      invalid_argument, "layer 0 slides but sliding_window is 0");
  PERSONA_REQUIRE_ERROR(read_model_config(kModels / "no-such-model"), io_error, "config.json");
}
