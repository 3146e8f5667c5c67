#include "persona/registry/eviction_policy.hpp"

#include "persona/core/error.hpp"

#include <list>
#include <set>
#include <unordered_map>

namespace persona {
namespace {

class LruPolicy final : public EvictionPolicy {
 public:
  void insert(std::uint64_t key, std::size_t bytes) override {
    PERSONA_CHECK(bytes > 0, "entry {} has 0 bytes", key);
    PERSONA_CHECK(!where_.contains(key), "entry {} is already held", key);
    order_.push_front(key);
    where_[key] = order_.begin();
  }
  void hit(std::uint64_t key) override {
    if (const auto it = where_.find(key); it != where_.end()) order_.splice(order_.begin(), order_, it->second);
  }
  std::optional<std::uint64_t> victim(const std::function<bool(std::uint64_t)>& pinned) const override {
    for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
      if (!pinned(*it)) return *it;
    }
    return std::nullopt;
  }
  void evict(std::uint64_t key) override { erase(key); }
  void erase(std::uint64_t key) override {
    if (const auto it = where_.find(key); it != where_.end()) {
      order_.erase(it->second);
      where_.erase(it);
    }
  }
  std::size_t size() const noexcept override { return where_.size(); }

 private:
  std::list<std::uint64_t> order_;  // most recent first
  std::unordered_map<std::uint64_t, std::list<std::uint64_t>::iterator> where_;
};

// Cao & Irani's GreedyDual-Size with Cherkasova's frequency: H = L + hits / bytes (cost 1: the hit rate
// is what counts), L rising to the H of each evicted entry so that entries not hit for long age out.
class GdsfPolicy final : public EvictionPolicy {
 public:
  void insert(std::uint64_t key, std::size_t bytes) override {
    PERSONA_CHECK(bytes > 0, "entry {} has 0 bytes", key);
    PERSONA_CHECK(!items_.contains(key), "entry {} is already held", key);
    Item item{0.0, bytes, 1};
    item.priority = priority(item);
    items_.emplace(key, item);
    order_.emplace(item.priority, key);
  }
  void hit(std::uint64_t key) override {
    const auto it = items_.find(key);
    if (it == items_.end()) return;
    order_.erase({it->second.priority, key});
    ++it->second.hits;
    it->second.priority = priority(it->second);
    order_.emplace(it->second.priority, key);
  }
  std::optional<std::uint64_t> victim(const std::function<bool(std::uint64_t)>& pinned) const override {
    for (const auto& [priority, key] : order_) {
      if (!pinned(key)) return key;
    }
    return std::nullopt;
  }
  void evict(std::uint64_t key) override {
    if (const auto it = items_.find(key); it != items_.end()) inflation_ = std::max(inflation_, it->second.priority);
    erase(key);
  }
  void erase(std::uint64_t key) override {
    if (const auto it = items_.find(key); it != items_.end()) {
      order_.erase({it->second.priority, key});
      items_.erase(it);
    }
  }
  std::size_t size() const noexcept override { return items_.size(); }

 private:
  struct Item {
    double priority;
    std::size_t bytes;
    std::uint64_t hits;
  };
  // Per MiB, so that priorities stay in a friendly range for adapters of kilobytes to gigabytes.
  double priority(const Item& item) const noexcept {
    return inflation_ + static_cast<double>(item.hits) * static_cast<double>(1 << 20) / static_cast<double>(item.bytes);
  }
  double inflation_ = 0.0;
  std::unordered_map<std::uint64_t, Item> items_;
  std::set<std::pair<double, std::uint64_t>> order_;  // lowest priority first; ties by key
};

}  // namespace

std::string_view to_string(EvictionPolicyKind kind) noexcept {
  return kind == EvictionPolicyKind::lru ? "lru" : "gdsf";
}

std::unique_ptr<EvictionPolicy> make_eviction_policy(EvictionPolicyKind kind) {
  switch (kind) {
    case EvictionPolicyKind::lru: return std::make_unique<LruPolicy>();
    case EvictionPolicyKind::gdsf: return std::make_unique<GdsfPolicy>();
  }
  PERSONA_THROW(invalid_argument, "unknown eviction policy {}", static_cast<int>(kind));
}

}  // namespace persona
