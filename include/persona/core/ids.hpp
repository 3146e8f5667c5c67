// The ids every component shares: who owns a thing (TenantId), which adapter (AdapterRef by name,
// AdapterKey by number), which version of it (AdapterVersion), sequences in the KV cache and vectors in
// an index. They live in core so that no component includes another just to name a tenant.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace persona {

// The owner of an adapter, a sequence or a vector.
using TenantId = std::uint64_t;
// The owner of what every tenant may use (public adapters, a declared public prompt).
inline constexpr TenantId kPublicTenant = 0;

// An adapter as users name it: its owner (kPublicTenant for public ones) and its id.
struct AdapterRef {
  TenantId owner = kPublicTenant;
  std::string id;
  friend bool operator==(const AdapterRef&, const AdapterRef&) = default;
};

// An adapter as the serving machinery names it: a number the AdapterRegistry gives each AdapterRef it
// loads, unique among that registry's adapters and kept for its lifetime. kNoAdapter is the base model.
using AdapterKey = std::uint64_t;
inline constexpr AdapterKey kNoAdapter = 0;

// A stored version of an adapter (AdapterStore numbers them 1, 2, ... per adapter); 0 with kNoAdapter.
using AdapterVersion = std::uint64_t;

// One version of one adapter: what anything computed with an adapter (K/V in the prefix cache) is keyed
// by, so that after a put of a new version nothing computed with the old one is reused. {} is the base
// model alone.
struct AdapterVersionId {
  AdapterKey key = kNoAdapter;
  AdapterVersion version = 0;
  friend bool operator==(const AdapterVersionId&, const AdapterVersionId&) = default;
};

// A sequence in a PagedKvCache. Ids are never reused: a freed id stays unknown for good.
struct SequenceId {
  std::uint64_t value = 0;
  friend bool operator==(SequenceId, SequenceId) = default;
};

// A vector's label in an index (unique within the index).
using VectorLabel = std::uint64_t;

}  // namespace persona

// AdapterRefs as keys of unordered containers.
template <>
struct std::hash<persona::AdapterRef> {
  std::size_t operator()(const persona::AdapterRef& ref) const noexcept {
    return std::hash<std::string>()(ref.id) ^ (static_cast<std::size_t>(ref.owner) * 0x9e3779b97f4a7c15ull);
  }
};
