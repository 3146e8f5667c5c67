// The serving demo's workload: its flags, the tenants (an int4 adapter each in an AdapterStore, memories
// in one HnswIndex, made once and reused across runs), the system prompt and the request trace (Zipf
// over tenants, Poisson arrivals).
#pragma once

#include "demo_model.hpp"

#include <persona/persona.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace serve_demo {

struct Options {
  std::size_t tenants = 1000, requests = 192, threads = 0, verify = 8, max_batch = 32, new_tokens = 32;
  int adapter_bits = 4;
  bool prefetch = true, tax = true;
  double rate = 24.0;                  // requests per second of trace time
  std::size_t ram_budget_percent = 5;  // of all adapter bytes
  std::size_t memories = 200;          // per tenant
  std::filesystem::path out = "serve_demo_out";
};

inline constexpr std::size_t kSystemPromptTokens = 64, kMemoryTokens = 4, kMemoryHits = 2, kMemoryDim = 32;
inline constexpr std::uint32_t kSeed = 2026;

// The flags; a bad one prints what was wrong and exits with status 2.
Options parse(int argc, char** argv);

// The tokens of memory item `label` (tenant * 1000 + item).
std::array<std::int32_t, kMemoryTokens> memory_tokens(persona::VectorLabel label, std::size_t vocab);

// The vector the memory index holds for some tokens: a fixed projection of their mean embedding.
class MemoryEmbedder {
 public:
  explicit MemoryEmbedder(const persona::Tensor<float>& embedding);  // [vocab, hidden], kept by the caller
  std::vector<float> embed(std::span<const std::int32_t> tokens) const;

 private:
  const persona::Tensor<float>& embedding_;
  persona::Tensor<float> projection_;
};

struct Tenants {
  std::unique_ptr<persona::AdapterStore> store;
  std::unique_ptr<persona::HnswIndex> memory;
  std::size_t adapter_bytes = 0;  // all tenants' adapters in RAM
  double setup_seconds = 0;
  bool reused = false;
};

// Makes (or, when the output folder holds the same setup, reopens) every tenant's adapter, shaped for the
// model's adapted layers, and memories. `model_key` names the model they were made for.
Tenants prepare_tenants(const Options& o, const persona::Model& model, const std::string& model_key,
                        const MemoryEmbedder& embedder);

struct Request {
  std::size_t id = 0;
  persona::TenantId tenant = 0;
  double arrival = 0;  // seconds of trace time
  std::vector<std::int32_t> user_prompt;
};

std::vector<Request> make_trace(const Options& o, std::size_t vocab);
std::vector<std::int32_t> system_prompt(std::size_t vocab);

}  // namespace serve_demo
