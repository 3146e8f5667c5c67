// FlatIndex: exact nearest-neighbour search by scanning every vector (SIMD distances): the oracle for
// HnswIndex and the right index for a small tenant. Labels are unique; a tenant id per vector.
#pragma once

#include "persona/ann/search.hpp"
#include "persona/core/tensor.hpp"

#include <cstddef>
#include <span>
#include <unordered_map>
#include <vector>

namespace persona {

class FlatIndex {
 public:
  explicit FlatIndex(std::size_t dim, Metric metric = Metric::l2);

  // Error shape_mismatch for a vector of another length, invalid_argument for NaN or infinity or a label
  // already present (or for cosine, a zero vector).
  void add(VectorLabel label, std::span<const float> vector, TenantId tenant = 0);
  // Error not_found for an unknown label.
  void remove(VectorLabel label);
  bool contains(VectorLabel label) const noexcept { return slots_.contains(label); }

  // The k nearest vectors that pass the filter, closest first (ties: lower label first). Fewer than k
  // when fewer pass; k = 0 is Error invalid_argument.
  std::vector<Neighbor> search(std::span<const float> query, std::size_t k, const SearchFilter& filter = {}) const;

  std::size_t dim() const noexcept { return dim_; }
  Metric metric() const noexcept { return metric_; }
  std::size_t size() const noexcept { return labels_.size(); }

 private:
  std::size_t dim_;
  Metric metric_;
  std::vector<float> vectors_;  // [size, dim]
  std::vector<VectorLabel> labels_;
  std::vector<TenantId> tenants_;
  std::unordered_map<VectorLabel, std::size_t> slots_;
};

}  // namespace persona
