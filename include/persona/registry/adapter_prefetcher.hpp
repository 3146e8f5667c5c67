// AdapterPrefetcher: learns from the access history which adapters will be wanted soon, so that the
// registry can load them before their first request: a daily (or any period's) rhythm per key — a tenant
// who arrives every morning — with older periods decayed, and which key tends to follow which. Keys are
// the caller's numbers for adapters; time is the caller's clock in seconds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace persona {

struct AdapterPrefetcherConfig {
  double period_seconds = 86400.0;  // the rhythm: a day
  std::size_t slots = 24;           // of the period (hours of the day)
  double decay = 0.5;               // weight of each earlier period relative to the next
  std::size_t successors = 4;       // kept per key: the keys most often seen next
};

class AdapterPrefetcher {
 public:
  explicit AdapterPrefetcher(AdapterPrefetcherConfig config = {});
  // One access of `key` at `time` (non-decreasing). Error invalid_argument if time goes back.
  void record(std::uint64_t key, double time);
  // Up to max_keys keys expected in [time, time + horizon), most expected first: by their activity in
  // those slots of earlier periods (decayed), then the usual successors of the most recent key. Any
  // finite time (before 0 too); Error invalid_argument for a non-finite time or horizon.
  std::vector<std::uint64_t> predict(double time, double horizon, std::size_t max_keys) const;
  std::size_t keys() const noexcept { return rhythm_.size(); }

 private:
  struct Rhythm {
    std::vector<float> counts;  // per slot, in units of the period `period` below
    std::int64_t period = 0;    // the period the counts are scaled to
  };
  AdapterPrefetcherConfig config_;
  std::unordered_map<std::uint64_t, Rhythm> rhythm_;
  std::unordered_map<std::uint64_t, std::unordered_map<std::uint64_t, std::uint32_t>> next_;
  std::uint64_t last_key_ = 0;
  bool has_last_ = false;
  double last_time_ = 0.0;
};

}  // namespace persona
