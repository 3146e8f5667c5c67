// Which resident adapter to evict next. The registry numbers its entries and tells the policy about
// inserts, hits and evictions; the policy orders them. Also used on its own to replay access traces.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>

namespace persona {

enum class EvictionPolicyKind : std::uint8_t {
  lru,   // least recently used
  gdsf,  // GreedyDual-Size-Frequency: lowest (inflation + hits / bytes) first; small and frequent stay
};
std::string_view to_string(EvictionPolicyKind kind) noexcept;

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;
  // Error invalid_argument for a key already present, or for 0 bytes.
  virtual void insert(std::uint64_t key, std::size_t bytes) = 0;
  virtual void hit(std::uint64_t key) = 0;  // unknown keys are ignored
  // The key to evict next among those `pinned` rejects; nullopt when every key is pinned (or none is held).
  virtual std::optional<std::uint64_t> victim(const std::function<bool(std::uint64_t)>& pinned) const = 0;
  // Removes the key: evicted (the policy may age the others) or dropped for another reason.
  virtual void evict(std::uint64_t key) = 0;
  virtual void erase(std::uint64_t key) = 0;
  virtual std::size_t size() const noexcept = 0;
};

std::unique_ptr<EvictionPolicy> make_eviction_policy(EvictionPolicyKind kind);

}  // namespace persona
