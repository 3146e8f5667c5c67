// What the vector indexes share: the metric, the result of a search, and the filter a search takes.
#pragma once

#include "persona/core/ids.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <utility>

namespace persona {

// Distances are "smaller is closer": l2 is the squared L2 distance; inner_product is 1 - a . b (hnswlib's
// convention); cosine normalizes vectors and queries on the way in and is then 1 - cos.
enum class Metric : std::uint8_t { l2, inner_product, cosine };

struct Neighbor {
  VectorLabel label = 0;
  float distance = 0.0f;
  friend bool operator==(const Neighbor&, const Neighbor&) = default;
};

// Which vectors a search may return. There is no default and no empty filter: a caller names the tenant
// whose vectors it searches, or asks for every tenant's by name, so that a forgotten filter never reads
// across tenants. A predicate narrows either further.
class SearchFilter {
 public:
  // Only this tenant's vectors: the isolation a multi-tenant caller needs.
  static SearchFilter only_tenant(TenantId tenant) { return SearchFilter(tenant); }
  // Every tenant's vectors (a single-tenant index, an operator's tool).
  static SearchFilter all_tenants() { return SearchFilter(std::nullopt); }
  // The same filter that also keeps only vectors whose label `predicate` accepts; the predicate is called
  // from the searching thread.
  SearchFilter where(std::function<bool(VectorLabel)> predicate) const {
    SearchFilter narrowed = *this;
    narrowed.predicate_ = std::move(predicate);
    return narrowed;
  }

  const std::optional<TenantId>& tenant() const noexcept { return tenant_; }  // none: every tenant
  const std::function<bool(VectorLabel)>& predicate() const noexcept { return predicate_; }

 private:
  explicit SearchFilter(std::optional<TenantId> tenant) : tenant_(tenant) {}
  std::optional<TenantId> tenant_;
  std::function<bool(VectorLabel)> predicate_;
};

}  // namespace persona
