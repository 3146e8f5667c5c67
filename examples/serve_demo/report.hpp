// What a serving run measured, and how it is shown: a table on the terminal, report.json and an SVG
// with two charts (inter-token latency distribution; time per stage).
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace serve_demo {

struct RunReport {
  std::string label;  // "multi-tenant" or "single adapter merged"
  std::size_t requests = 0, prefill_tokens = 0, cached_prompt_tokens = 0, decode_tokens = 0;
  double seconds = 0, prefill_seconds = 0, decode_seconds = 0;
  std::vector<double> token_latency_ms;  // between consecutive tokens of a request
  std::vector<double> first_token_ms;    // arrival to first token
  std::vector<std::pair<std::string, double>> stage_seconds;
  // Adapter registry (multi-tenant run only).
  std::size_t adapter_hits = 0, adapter_misses = 0, adapter_prefetch_hits = 0, adapter_prefetches = 0;
  std::size_t adapter_loads = 0, adapter_evictions = 0;
  double adapter_bytes_read = 0, registry_budget_bytes = 0;
  std::vector<double> switch_ms;  // acquire to adapter ready, per request
  // KV cache.
  std::size_t kv_blocks = 0, kv_peak_used_blocks = 0, kv_peak_wasted_slots = 0;
  double kv_prefix_hit_rate = 0;
  std::vector<std::size_t> expert_load;  // routed slots per expert, all layers
  double prefill_tokens_per_second() const {
    return prefill_seconds > 0 ? static_cast<double>(prefill_tokens) / prefill_seconds : 0;
  }
  double decode_tokens_per_second() const {
    return decode_seconds > 0 ? static_cast<double>(decode_tokens) / decode_seconds : 0;
  }
};

struct Verification {
  std::size_t checked = 0, passed = 0;
  double worst_relative_error = 0, tolerance = 0;
  float router_tie = 0;
  std::size_t steps = 0;             // generated tokens compared
  std::size_t followed_routing = 0;  // (token, layer) router near-ties where the reference took the batched choice
  std::vector<std::string> failures;
};

double percentile(std::vector<double> values, double q);

// Prints the report, writes report.json and report.svg into `folder`.
void write_report(const RunReport& run, const RunReport* merged, const Verification& verification,
                  const std::string& setup_json, const std::filesystem::path& folder);

}  // namespace serve_demo
