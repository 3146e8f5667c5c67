// What the vector indexes share: the metric, the result of a search, and the filter a search takes.
#pragma once

#include "persona/core/ids.hpp"

#include <cstdint>
#include <functional>
#include <optional>

namespace persona {

// Distances are "smaller is closer": l2 is the squared L2 distance; inner_product is 1 - a . b (hnswlib's
// convention); cosine normalizes vectors and queries on the way in and is then 1 - cos.
enum class Metric : std::uint8_t { l2, inner_product, cosine };

struct Neighbor {
  VectorLabel label = 0;
  float distance = 0.0f;
  friend bool operator==(const Neighbor&, const Neighbor&) = default;
};

struct SearchFilter {
  // Only this tenant's vectors (the isolation a multi-tenant caller needs); none: every tenant's.
  std::optional<TenantId> tenant = std::nullopt;
  // Only vectors whose label it accepts; called from the searching thread.
  std::function<bool(VectorLabel)> predicate = nullptr;
};

}  // namespace persona
