// Model: a decoder loaded from a Hugging Face model folder (read_model_config + Checkpoint), and the
// forward of one serving step over a PagedKvCache, with every token's own LoRA adapter on every linear
// layer, the routed and shared experts included. Supported architectures: model_config.hpp; how weights
// are stored and how to bring a checkpoint: docs/models.md.
#pragma once

#include "persona/core/tensor.hpp"
#include "persona/kv/kv_cache_config.hpp"
#include "persona/kv/paged_kv_cache.hpp"
#include "persona/lora/lora_adapter.hpp"
#include "persona/lora/lora_apply.hpp"  // kNoLora
#include "persona/model/model_config.hpp"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace persona {

// How the base model's linear layers are held in memory: f32 (converted from bf16, f16 or f32 files);
// bf16 (a bf16 file's tensors used in place from its mapping, others rounded); or quantized at load to
// persona's int8 / int4 group formats (symmetric, groups of 32 along the input). The embedding is f32
// with f32 weights and bf16 otherwise; norms and router weights stay f32.
enum class WeightFormat { f32, bf16, int8, int4 };

struct ModelLoadOptions {
  // For a Hugging Face folder, how to hold the weights (default f32). A persona model file
  // (convert_model) holds them in its own format: naming another is Error(invalid_argument).
  std::optional<WeightFormat> weights = std::nullopt;
};

// One serving step: each sequence brings its next tokens (a chunk of prompt, or one decode token), whose
// positions the caller has already appended to the cache (PagedKvCache::append_tokens or
// create_sequence with the prompt); forward computes them and writes their K/V in every layer.
struct ForwardBatch {
  std::span<const SequenceId> sequences = {};
  std::span<const std::size_t> token_counts = {};  // per sequence, >= 1
  std::span<const std::int32_t> tokens = {};       // all sequences' tokens, in sequence order
  // Per token: the adapter slot (an index into adapters) or kNoLora; empty: no token is adapted.
  std::span<const std::int32_t> lora_slots = {};
  std::span<const LoraAdapter* const> adapters = {};
  // Rows of `tokens` whose logits to return, in this order; empty: the last token of each sequence.
  std::span<const std::size_t> logit_rows = {};
};

// What one step did, for reports and metrics: forward fills it when given one (the stage times cost a
// clock read per stage and layer).
struct ForwardStats {
  // Wall seconds of the step's stages: the base weights' products (linear layers and lm_head), the LoRA
  // deltas (with DoRA's, whose base product is inside), attention (K/V writes and paged attention), the
  // routed experts (router, experts with their LoRA, combination), and the rest (embedding, norms, RoPE,
  // q/k norm, biases, SwiGLU, residuals, the shared expert's gate).
  double base_seconds = 0, lora_seconds = 0, attention_seconds = 0, experts_seconds = 0, other_seconds = 0;
  // The experts each token was routed to in each MoE layer, in layer order, best first:
  // [MoE layers, tokens, experts_per_token].
  std::vector<std::int32_t> routed_experts;

  double total_seconds() const noexcept {
    return base_seconds + lora_seconds + attention_seconds + experts_seconds + other_seconds;
  }
};

// Scratch of the forward: activations, the step's LoRA plan, the LoRA and MoE workspaces, routing. Grown to
// the largest step it has run and reused. One per concurrent caller.
class ModelWorkspace {
 public:
  ModelWorkspace();
  ~ModelWorkspace();
  ModelWorkspace(ModelWorkspace&&) noexcept;
  ModelWorkspace& operator=(ModelWorkspace&&) noexcept;
  std::size_t bytes() const noexcept;

  struct Impl;  // defined in src/model (opaque to users)

 private:
  friend class Model;
  std::unique_ptr<Impl> impl_;
};

class Model {
 public:
  // A Hugging Face folder: reads config.json (read_model_config) and the weights. Errors name the file,
  // tensor or field: a tensor missing, left over (not part of the architecture), or of the wrong shape or
  // dtype (Error(shape_mismatch) / corrupt_data), plus those of read_model_config and Checkpoint::open.
  // A persona model file (a regular file written by convert_model, docs/formats.md): mapped, its checksum
  // verified, its quantized planes and bf16 tensors used in place (planes a file does not align
  // to 64 bytes are copied); the same checks.
  static Model load(const std::filesystem::path& path, const ModelLoadOptions& options = {});

  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  const ModelConfig& config() const noexcept;
  WeightFormat weight_format() const noexcept;
  // Bytes of the weights as held, and of those read in place from the file's mapping (bf16 tensors of a
  // bf16 file with WeightFormat::bf16; the quantized and bf16 matrices of a persona model file): the page
  // cache holds those, shared with other processes.
  std::size_t weight_bytes() const noexcept;
  std::size_t mapped_weight_bytes() const noexcept;

  // A cache shaped for this model: its layers, KV heads and head_dim.
  KvCacheConfig kv_cache_config(std::size_t num_blocks, std::size_t block_size = 16, DType storage = DType::f32) const;

  // The names of the linear layers of `layer` LoRA may adapt, as PEFT's module paths below
  // "model.layers.<layer>." (e.g. "self_attn.q_proj", "mlp.experts.3.gate_proj",
  // "block_sparse_moe.experts.3.w1"), each with its [out, in] shape.
  struct AdaptableModule {
    std::string name;
    std::size_t out = 0, in = 0;
  };
  std::vector<AdaptableModule> adaptable_modules(std::size_t layer) const;

  // Runs one step and returns the logits of the requested rows: [rows, vocab]. Errors (before anything is
  // written): shapes that disagree, a token outside the vocabulary, a sequence whose appended positions do
  // not match its token count, a slot without an adapter, an adapter module whose shape does not fit the
  // model's layer (naming the adapter, layer and module), an adapter naming one module twice (by its name
  // and an alias). Results do not depend on the thread count. With `stats`, also what the step did. Once
  // the workspace has run a step as large, a step allocates only the returned logits.
  Tensor<float> forward(const ForwardBatch& batch, PagedKvCache& cache, ModelWorkspace& workspace,
                        ForwardStats* stats = nullptr) const;

  struct Weights;  // defined in src/model (opaque to users)

 private:
  Model();
  std::unique_ptr<Weights> weights_;
};

}  // namespace persona
