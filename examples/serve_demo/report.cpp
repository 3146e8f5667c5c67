#include "report.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>

namespace serve_demo {
namespace {

nlohmann::json run_json(const RunReport& r) {
  nlohmann::json stages = nlohmann::json::object();
  double total = 0;
  for (const auto& [name, seconds] : r.stage_seconds) total += seconds;
  for (const auto& [name, seconds] : r.stage_seconds) {
    stages[name] = {{"seconds", seconds}, {"share", total > 0 ? seconds / total : 0.0}};
  }
  nlohmann::json j = {
      {"label", r.label},
      {"requests", r.requests},
      {"seconds", r.seconds},
      {"prefill",
       {{"tokens", r.prefill_tokens},
        {"cached_prompt_tokens", r.cached_prompt_tokens},
        {"seconds", r.prefill_seconds},
        {"tokens_per_second", r.prefill_tokens_per_second()}}},
      {"decode",
       {{"tokens", r.decode_tokens},
        {"seconds", r.decode_seconds},
        {"tokens_per_second", r.decode_tokens_per_second()}}},
      {"token_latency_ms",
       {{"p50", percentile(r.token_latency_ms, 0.5)}, {"p99", percentile(r.token_latency_ms, 0.99)}}},
      {"first_token_ms", {{"p50", percentile(r.first_token_ms, 0.5)}, {"p99", percentile(r.first_token_ms, 0.99)}}},
      {"stages", stages},
      {"kv_cache",
       {{"blocks", r.kv_blocks},
        {"peak_used_blocks", r.kv_peak_used_blocks},
        {"wasted_slots_at_peak", r.kv_peak_wasted_slots},
        {"prefix_hit_rate", r.kv_prefix_hit_rate}}},
      {"expert_load", r.expert_load},
  };
  if (!r.switch_ms.empty()) {
    const double acquires = static_cast<double>(r.adapter_hits + r.adapter_misses);
    j["adapters"] = {{"ram_hits", r.adapter_hits},
                     {"disk_loads_waited_for", r.adapter_misses},
                     {"ram_hit_rate", acquires > 0 ? static_cast<double>(r.adapter_hits) / acquires : 0.0},
                     {"prefetches", r.adapter_prefetches},
                     {"hits_on_prefetched", r.adapter_prefetch_hits},
                     {"loads", r.adapter_loads},
                     {"evictions", r.adapter_evictions},
                     {"bytes_read", r.adapter_bytes_read},
                     {"ram_budget_bytes", r.registry_budget_bytes},
                     {"switch_ms", {{"p50", percentile(r.switch_ms, 0.5)}, {"p99", percentile(r.switch_ms, 0.99)}}}};
  }
  return j;
}

std::string escape(const std::string& s) {
  std::string out;
  for (char ch : s) out += ch == '&' ? std::string("&amp;") : ch == '<' ? std::string("&lt;") : std::string(1, ch);
  return out;
}

// Two charts side by side: a histogram of inter-token latencies, and the time per stage as bars.
std::string svg(const RunReport& r) {
  constexpr int kWidth = 980, kHeight = 380;
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" "
      "font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      kWidth, kHeight);
  // Histogram: 30 bins from 0 to the p99.5 latency.
  const double top = std::max(percentile(r.token_latency_ms, 0.995), 1e-3);
  constexpr int kBins = 30;
  std::vector<std::size_t> bins(kBins, 0);
  for (double ms : r.token_latency_ms)
    bins[std::min<std::size_t>(kBins - 1, static_cast<std::size_t>(ms / top * kBins))]++;
  const std::size_t most = std::max<std::size_t>(1, *std::max_element(bins.begin(), bins.end()));
  const double x0 = 60, y0 = 320, w = 380, h = 250;
  s += fmt::format("<text x=\"{}\" y=\"30\" font-size=\"15\">Time between tokens ({} decode tokens)</text>\n", x0,
                   r.token_latency_ms.size());
  for (int b = 0; b < kBins; ++b) {
    const double bh = h * static_cast<double>(bins[b]) / static_cast<double>(most);
    s += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"#4a7bd0\"/>\n",
                     x0 + w * b / kBins, y0 - bh, w / kBins - 1, bh);
  }
  s += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"black\"/>\n", x0, y0, x0 + w);
  for (int i = 0; i <= 4; ++i) {
    s += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{:.1f}</text>\n", x0 + w * i / 4, y0 + 16,
                     top * i / 4);
  }
  s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">ms (p50 {:.2f}, p99 {:.2f})</text>\n", x0 + w / 2,
                   y0 + 36, percentile(r.token_latency_ms, 0.5), percentile(r.token_latency_ms, 0.99));
  s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n", x0 - 6, y0 - h + 4, most);
  s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\n", x0 - 6, y0);

  // Stages: horizontal bars as % of the total.
  double total = 0;
  for (const auto& [name, seconds] : r.stage_seconds) total += seconds;
  const double sx = 680, sw = 250;
  s += fmt::format("<text x=\"520\" y=\"30\" font-size=\"15\">Time per stage (% of {:.2f} s)</text>\n", total);
  double y = 60;
  for (const auto& [name, seconds] : r.stage_seconds) {
    const double share = total > 0 ? seconds / total : 0;
    s += fmt::format("<text x=\"{}\" y=\"{:.0f}\" text-anchor=\"end\">{}</text>\n", sx - 8, y + 14, escape(name));
    s += fmt::format("<rect x=\"{}\" y=\"{:.0f}\" width=\"{:.1f}\" height=\"20\" fill=\"#d07a4a\"/>\n", sx, y,
                     std::max(1.0, sw * share));
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.0f}\">{:.1f}%</text>\n", sx + std::max(1.0, sw * share) + 4, y + 14,
                     100 * share);
    y += 34;
  }
  s += "</svg>\n";
  return s;
}

}  // namespace

double percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, static_cast<std::size_t>(q * static_cast<double>(values.size())))];
}

void write_report(const RunReport& run, const RunReport* merged, const Verification& verification,
                  const std::string& setup_json, const std::filesystem::path& folder) {
  nlohmann::json report = {{"setup", nlohmann::json::parse(setup_json)}, {"multi_tenant", run_json(run)}};
  fmt::print("\n{} requests in {:.2f} s\n", run.requests, run.seconds);
  fmt::print("  prefill  {:>8.0f} tokens/s  ({} tokens computed, {} prompt tokens from the prefix cache)\n",
             run.prefill_tokens_per_second(), run.prefill_tokens, run.cached_prompt_tokens);
  fmt::print("  decode   {:>8.0f} tokens/s  ({} tokens)\n", run.decode_tokens_per_second(), run.decode_tokens);
  fmt::print("  time between tokens p50 {:.2f} ms, p99 {:.2f} ms; first token p50 {:.1f} ms, p99 {:.1f} ms\n",
             percentile(run.token_latency_ms, 0.5), percentile(run.token_latency_ms, 0.99),
             percentile(run.first_token_ms, 0.5), percentile(run.first_token_ms, 0.99));
  double total = 0;
  for (const auto& [name, seconds] : run.stage_seconds) total += seconds;
  fmt::print("  time per stage:");
  for (const auto& [name, seconds] : run.stage_seconds) fmt::print(" {} {:.1f}%,", name, 100 * seconds / total);
  fmt::print("\n");
  if (!run.switch_ms.empty()) {
    const double acquires = static_cast<double>(run.adapter_hits + run.adapter_misses);
    fmt::print(
        "  adapters: {:.1f}% of acquires served from RAM ({} hits, {} waited for a disk load; {} of the hits on "
        "prefetched adapters), {} loads, {} evictions, {:.1f} MiB read; switch p50 {:.3f} ms, p99 {:.2f} ms\n",
        acquires > 0 ? 100 * static_cast<double>(run.adapter_hits) / acquires : 0.0, run.adapter_hits,
        run.adapter_misses, run.adapter_prefetch_hits, run.adapter_loads, run.adapter_evictions,
        run.adapter_bytes_read / (1 << 20), percentile(run.switch_ms, 0.5), percentile(run.switch_ms, 0.99));
  }
  fmt::print("  KV cache: {} of {} blocks used at the peak, {} slots wasted there; prefix-cache hit rate {:.1f}%\n",
             run.kv_peak_used_blocks, run.kv_blocks, run.kv_peak_wasted_slots, 100 * run.kv_prefix_hit_rate);
  fmt::print("  expert load (routed slots, all layers):");
  for (std::size_t n : run.expert_load) fmt::print(" {}", n);
  fmt::print("\n");
  if (merged != nullptr) {
    const double share = merged->decode_tokens_per_second() > 0
                             ? run.decode_tokens_per_second() / merged->decode_tokens_per_second()
                             : 0.0;
    fmt::print(
        "  multi-tenant tax: decode {:.0f} tokens/s with every request on its own adapter vs {:.0f} with one "
        "adapter merged into the weights: {:.1f}% (goal >= 90%)\n",
        run.decode_tokens_per_second(), merged->decode_tokens_per_second(), 100 * share);
    report["single_adapter_merged"] = run_json(*merged);
    report["multi_tenant_decode_share"] = share;
  }
  report["verification"] = {{"checked", verification.checked},
                            {"passed", verification.passed},
                            {"tolerance_relative_to_largest_logit", verification.tolerance},
                            {"worst_relative_error", verification.worst_relative_error},
                            {"failures", verification.failures}};
  std::ofstream(folder / "report.json") << report.dump(2) << "\n";
  std::ofstream(folder / "report.svg") << svg(run);
  fmt::print(
      "verified {}/{} (each request recomputed alone in f32 with its adapter merged: {} tokens, logits within "
      "{:.0f}% of the largest logit, worst {:.2f}%, same greedy tokens; {} router near-ties (logits within {}) "
      "took the batched run's experts)\n",
      verification.passed, verification.checked, verification.steps, 100 * verification.tolerance,
      100 * verification.worst_relative_error, verification.followed_routing, verification.router_tie);
  fmt::print("report: {} and {}\n", (folder / "report.json").string(), (folder / "report.svg").string());
}

}  // namespace serve_demo
