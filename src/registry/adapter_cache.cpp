#include "persona/registry/adapter_cache.hpp"

#include "persona/core/error.hpp"

#include <algorithm>
#include <chrono>

namespace persona {
namespace {
constexpr std::size_t kLatencySamples = 4096;  // the most recent loads, for the percentiles
}

AdapterCache::AdapterCache(AdapterCacheConfig config, Loader loader, GenerationOf generation_of)
    : config_(config),
      loader_(std::move(loader)),
      generation_of_(std::move(generation_of)),
      policy_(make_eviction_policy(config.eviction)) {
  PERSONA_CHECK(config_.ram_budget_bytes > 0, "ram_budget_bytes is 0; expected at least one adapter's bytes");
  PERSONA_CHECK(loader_ != nullptr, "no loader given");
}

AdapterKey AdapterCache::assign_key(const AdapterRef& ref) {
  const auto [it, added] = keys_.try_emplace(ref, static_cast<AdapterKey>(refs_.size() + 1));
  if (added) {
    refs_.push_back(ref);
    last_bytes_.push_back(0);
  }
  return it->second;
}

// An adapter is pinned while a handle holds it or while pinned resident. A new handle is either a copy of
// a live one (the count is already above one) or made here under `mutex_`: a count of one read under
// `mutex_` means no handle exists and none can appear meanwhile.
void AdapterCache::make_room(std::size_t incoming) {
  const auto is_pinned = [&](std::uint64_t key) { return pinned(entries_.at(key)); };
  while (resident_bytes_ + incoming > config_.ram_budget_bytes) {
    const std::optional<std::uint64_t> victim = policy_->victim(is_pinned);
    if (!victim) break;
    const auto found = entries_.find(*victim);
    counts_.prefetch_unused += found->second.prefetched_unused ? 1 : 0;
    ++counts_.evictions;
    resident_bytes_ -= found->second.bytes;
    policy_->evict(*victim);
    entries_.erase(found);
  }
}

AdapterHandle AdapterCache::hit(Entry& entry) {
  policy_->hit(entry.loaded->key);
  ++counts_.hits;
  if (entry.prefetched_unused) {
    ++counts_.prefetch_hits;
    entry.prefetched_unused = false;
  }
  return AdapterHandle(entry.loaded);
}

// A load begun after an invalidation may have replaced this one in in_flight_: that one stays.
void AdapterCache::end_flight(const AdapterRef& ref, std::uint64_t epoch) {
  if (const auto it = in_flight_.find(ref); it != in_flight_.end() && it->second.epoch == epoch) in_flight_.erase(it);
}

void AdapterCache::load(const AdapterRef& ref, std::promise<Result>& promise, std::uint64_t epoch, bool prefetch) {
  const auto start = std::chrono::steady_clock::now();
  try {
    Loaded read = loader_(ref);
    const std::size_t bytes = read.adapter.bytes();
    PERSONA_CHECK_CODE(capacity_exhausted, bytes <= config_.ram_budget_bytes,
                       "adapter '{}' of tenant {} takes {} bytes; the RAM budget is {} bytes", ref.id, ref.owner, bytes,
                       config_.ram_budget_bytes);
    std::shared_ptr<const LoadedAdapter> loaded;
    {
      std::lock_guard lock(mutex_);
      const AdapterKey key = assign_key(ref);
      loaded = std::make_shared<const LoadedAdapter>(LoadedAdapter{std::move(read.adapter), key, read.version});
      ++counts_.loads;
      counts_.bytes_read += read.file_bytes;
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      counts_.load_total_ms += ms;
      if (load_ms_.size() < kLatencySamples) {
        load_ms_.push_back(ms);
      } else {
        load_ms_[next_sample_++ % kLatencySamples] = ms;
      }
      end_flight(ref, epoch);
      if (epoch_of(ref) == epoch) {  // no invalidation since the load began
        make_room(bytes);
        if (const auto old = entries_.find(key); old != entries_.end()) {
          resident_bytes_ -= old->second.bytes;
          policy_->erase(key);
          entries_.erase(old);
        }
        policy_->insert(key, bytes);
        entries_[key] = Entry{loaded, bytes, resident_pins_.contains(ref), prefetch, read.generation};
        resident_bytes_ += bytes;
        last_bytes_[key - 1] = bytes;
      }
    }
    promise.set_value(Result{std::move(loaded), std::nullopt, nullptr});
  } catch (...) {
    {
      std::lock_guard lock(mutex_);
      end_flight(ref, epoch);
      ++counts_.load_failures;
    }
    try {
      throw;
    } catch (const Error& e) {
      promise.set_value(Result{nullptr, Failure{e.code(), e.function(), e.message()}, nullptr});
    } catch (...) {
      promise.set_value(Result{nullptr, std::nullopt, std::current_exception()});
    }
  }
}

AdapterHandle AdapterCache::get(const AdapterRef& ref, bool prefetch) {
  std::shared_future<Result> waiting;
  std::promise<Result> promise;
  std::uint64_t epoch = 0;
  bool loader = false;
  {
    std::lock_guard lock(mutex_);
    make_room(0);  // handles released since the last call may have left pinned bytes over the budget
    if (Entry* entry = current(ref)) return prefetch ? AdapterHandle() : hit(*entry);
    ++(prefetch ? counts_.prefetches : counts_.misses);
    epoch = epoch_of(ref);
    if (const auto it = in_flight_.find(ref); it != in_flight_.end() && it->second.epoch == epoch) {
      waiting = it->second.result;
    } else {  // none in flight, or one begun before an invalidation: its adapter may be the old one
      loader = true;
      waiting = promise.get_future().share();
      in_flight_.insert_or_assign(ref, InFlight{waiting, epoch});
    }
  }
  if (loader) load(ref, promise, epoch, prefetch);
  if (prefetch) return AdapterHandle();
  const Result& result = waiting.get();
  if (result.failure) throw Error(result.failure->code, result.failure->function, result.failure->message);
  if (result.other) std::rethrow_exception(result.other);
  return AdapterHandle(result.loaded);
}

AdapterHandle AdapterCache::find(const AdapterRef& ref) {
  std::lock_guard lock(mutex_);
  make_room(0);
  Entry* entry = current(ref);
  return entry == nullptr ? AdapterHandle() : hit(*entry);
}

bool AdapterCache::stale(const AdapterRef& ref, const Entry& entry) const {
  return generation_of_ && generation_of_(ref) != entry.generation;
}

AdapterCache::Entry* AdapterCache::current(const AdapterRef& ref) {
  const auto key = keys_.find(ref);
  if (key == keys_.end()) return nullptr;
  const auto it = entries_.find(key->second);
  if (it == entries_.end()) return nullptr;
  if (!stale(ref, it->second)) return &it->second;
  invalidate_locked(ref);  // written since it was loaded, by another store on the root or another process
  return nullptr;
}

void AdapterCache::invalidate(const AdapterRef& ref) {
  std::lock_guard lock(mutex_);
  invalidate_locked(ref);
}

void AdapterCache::invalidate_locked(const AdapterRef& ref) {
  if (epochs_.size() >= kMaxTrackedEpochs && !epochs_.contains(ref)) {
    // Forget them all and give every untracked ref a new epoch: no caller's earlier value still matches.
    epochs_.clear();
    untracked_epoch_ = ++last_epoch_;
  }
  epochs_[ref] = ++last_epoch_;
  const auto key = keys_.find(ref);
  if (key == keys_.end()) return;
  if (const auto it = entries_.find(key->second); it != entries_.end()) {
    resident_bytes_ -= it->second.bytes;
    policy_->erase(key->second);
    entries_.erase(it);
  }
}

bool AdapterCache::set_resident_pin(const AdapterRef& ref, bool pin) {
  std::lock_guard lock(mutex_);
  const auto key = keys_.find(ref);
  const auto it = key == keys_.end() ? entries_.end() : entries_.find(key->second);
  if (it != entries_.end()) it->second.resident_pin = pin;
  if (!pin) {
    resident_pins_.erase(ref);
    make_room(0);
  } else if (it != entries_.end()) {
    resident_pins_.insert(ref);
  }
  return it != entries_.end();
}

bool AdapterCache::holds(const AdapterRef& ref) const {
  std::lock_guard lock(mutex_);
  if (in_flight_.contains(ref)) return true;
  const auto key = keys_.find(ref);
  if (key == keys_.end()) return false;
  const auto it = entries_.find(key->second);
  return it != entries_.end() && !stale(ref, it->second);
}

std::uint64_t AdapterCache::epoch(const AdapterRef& ref) const {
  std::lock_guard lock(mutex_);
  return epoch_of(ref);
}

std::uint64_t AdapterCache::epoch_of(const AdapterRef& ref) const {
  const auto known = epochs_.find(ref);
  return known == epochs_.end() ? untracked_epoch_ : known->second;
}

AdapterKey AdapterCache::key_of(const AdapterRef& ref) const {
  std::lock_guard lock(mutex_);
  const auto key = keys_.find(ref);
  return key == keys_.end() ? kNoAdapter : key->second;
}

std::optional<AdapterRef> AdapterCache::ref_of(AdapterKey key) const {
  std::lock_guard lock(mutex_);
  if (key == kNoAdapter || key > refs_.size()) return std::nullopt;
  return refs_[key - 1];
}

std::size_t AdapterCache::last_bytes(AdapterKey key) const {
  std::lock_guard lock(mutex_);
  return key == kNoAdapter || key > last_bytes_.size() ? 0 : last_bytes_[key - 1];
}

AdapterCacheStats AdapterCache::stats() {
  std::lock_guard lock(mutex_);
  make_room(0);
  AdapterCacheStats s = counts_;
  s.resident_adapters = entries_.size();
  s.resident_bytes = resident_bytes_;
  s.tracked_epochs = epochs_.size();
  for (const auto& [key, entry] : entries_) s.pinned_bytes += pinned(entry) ? entry.bytes : 0;
  s.over_budget_bytes = resident_bytes_ > config_.ram_budget_bytes ? resident_bytes_ - config_.ram_budget_bytes : 0;
  if (!load_ms_.empty()) {
    std::vector<double> sorted = load_ms_;
    std::sort(sorted.begin(), sorted.end());
    const auto at = [&](double q) {
      return sorted[static_cast<std::size_t>(q * static_cast<double>(sorted.size() - 1))];
    };
    s.load_p50_ms = at(0.50);
    s.load_p99_ms = at(0.99);
  }
  return s;
}

}  // namespace persona
