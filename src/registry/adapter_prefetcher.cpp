#include "persona/registry/adapter_prefetcher.hpp"

#include "persona/core/error.hpp"

#include <algorithm>
#include <cmath>

namespace persona {

AdapterPrefetcher::AdapterPrefetcher(AdapterPrefetcherConfig config) : config_(config) {
  PERSONA_CHECK(config.period_seconds > 0.0 && std::isfinite(config.period_seconds),
                "period_seconds is {}; expected a positive number", config.period_seconds);
  PERSONA_CHECK(config.slots >= 1, "slots is 0; expected at least 1");
  PERSONA_CHECK(config.decay >= 0.0 && config.decay <= 1.0, "decay is {}; expected 0..1", config.decay);
}

void AdapterPrefetcher::record(std::uint64_t key, double time) {
  PERSONA_CHECK(std::isfinite(time) && (!has_last_ || time >= last_time_),
                "time {} is before the last recorded time {}", time, last_time_);
  const double position = time / config_.period_seconds;
  const auto period = static_cast<std::int64_t>(std::floor(position));
  const auto slot =
      static_cast<std::size_t>((position - static_cast<double>(period)) * static_cast<double>(config_.slots));
  Rhythm& r = rhythm_[key];
  if (r.counts.empty()) {
    r.counts.assign(config_.slots, 0.0f);
    r.period = period;
  }
  if (period > r.period) {  // earlier periods fade
    const auto factor = static_cast<float>(std::pow(config_.decay, static_cast<double>(period - r.period)));
    for (float& c : r.counts) c *= factor;
    r.period = period;
  }
  r.counts[std::min(slot, config_.slots - 1)] += 1.0f;
  if (has_last_ && last_key_ != key) {
    auto& following = next_[last_key_];
    ++following[key];
    if (following.size() > 4 * config_.successors) {  // keep the map small: drop the rarest half
      std::vector<std::pair<std::uint32_t, std::uint64_t>> ranked;
      for (const auto& [k, n] : following) ranked.emplace_back(n, k);
      std::sort(ranked.rbegin(), ranked.rend());
      following.clear();
      for (std::size_t i = 0; i < 2 * config_.successors; ++i) following.emplace(ranked[i].second, ranked[i].first);
    }
  }
  last_key_ = key;
  has_last_ = true;
  last_time_ = time;
}

std::vector<std::uint64_t> AdapterPrefetcher::predict(double time, double horizon, std::size_t max_keys) const {
  PERSONA_CHECK(std::isfinite(time) && std::isfinite(horizon), "time {} / horizon {}: expected finite values", time,
                horizon);
  std::vector<std::uint64_t> out;
  if (max_keys == 0) return out;
  const double slot_seconds = config_.period_seconds / static_cast<double>(config_.slots);
  const auto first = static_cast<std::int64_t>(std::floor(time / slot_seconds));
  const auto last = static_cast<std::int64_t>(std::floor((time + std::max(horizon, 0.0)) / slot_seconds));
  const auto now_period = static_cast<std::int64_t>(std::floor(time / config_.period_seconds));
  std::vector<std::pair<float, std::uint64_t>> scored;
  for (const auto& [key, r] : rhythm_) {
    float score = 0.0f;
    for (std::int64_t s = first; s <= last && s < first + static_cast<std::int64_t>(config_.slots); ++s) {
      const auto slots = static_cast<std::int64_t>(config_.slots);
      score += r.counts[static_cast<std::size_t>((s % slots + slots) % slots)];  // times before 0 too
    }
    // Counts last scaled to an earlier period fade to now's scale.
    if (now_period > r.period)
      score *= static_cast<float>(std::pow(config_.decay, static_cast<double>(now_period - r.period)));
    if (score > 0.0f) scored.emplace_back(score, key);
  }
  const std::size_t take = std::min(max_keys, scored.size());
  std::partial_sort(
      scored.begin(), scored.begin() + static_cast<std::ptrdiff_t>(take), scored.end(),
      [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  for (std::size_t i = 0; i < take; ++i) out.push_back(scored[i].second);
  if (has_last_ && out.size() < max_keys) {
    if (const auto it = next_.find(last_key_); it != next_.end()) {
      std::vector<std::pair<std::uint32_t, std::uint64_t>> ranked;
      for (const auto& [k, n] : it->second) ranked.emplace_back(n, k);
      std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
      });
      for (std::size_t i = 0; i < std::min(ranked.size(), config_.successors) && out.size() < max_keys; ++i) {
        if (std::find(out.begin(), out.end(), ranked[i].second) == out.end()) out.push_back(ranked[i].second);
      }
    }
  }
  return out;
}

}  // namespace persona
