// VectorIndex: what FlatIndex and HnswIndex both offer (labelled vectors with a tenant each, filtered
// k-nearest search, removal, saving, their memory), so that a caller can hold either through one
// reference and swap the exact index for the approximate one as a tenant grows.
#pragma once

#include "persona/ann/search.hpp"
#include "persona/core/tensor.hpp"

#include <cstddef>
#include <filesystem>
#include <span>
#include <vector>

namespace persona {

class VectorIndex {
 public:
  virtual ~VectorIndex() = default;

  virtual std::size_t dim() const noexcept = 0;
  virtual Metric metric() const noexcept = 0;
  virtual std::size_t size() const noexcept = 0;  // live vectors

  // Every vector belongs to the tenant given with it; there is no default owner. Error shape_mismatch for
  // a vector of another length, invalid_argument for NaN or infinity, a label already present (whoever
  // owns it: labels are one namespace per index), or a zero vector under cosine.
  virtual void add(VectorLabel label, std::span<const float> vector, TenantId tenant) = 0;
  // vectors [n, dim], one label and one tenant per row. Error shape_mismatch for another shape or count; a
  // row that add refuses throws after the other rows are in.
  virtual void add(std::span<const VectorLabel> labels, TensorView<const float> vectors,
                   std::span<const TenantId> tenants) = 0;
  // Every row to one tenant.
  void add(std::span<const VectorLabel> labels, TensorView<const float> vectors, TenantId tenant) {
    const std::vector<TenantId> tenants(labels.size(), tenant);
    add(labels, vectors, std::span<const TenantId>(tenants));
  }
  // Operations by label act for a tenant and only on its own vectors. Error not_found for an unknown
  // label, permission_denied for another tenant's (the message names neither that tenant nor anything of
  // the vector).
  virtual void remove(VectorLabel label, TenantId tenant) = 0;
  // Whether `tenant` has a vector labelled `label`: false for another tenant's label.
  virtual bool contains(VectorLabel label, TenantId tenant) const = 0;

  // The k nearest live vectors that pass the filter, closest first (ties: lower label first); fewer when
  // fewer pass. k = 0 is Error invalid_argument.
  virtual std::vector<Neighbor> search(std::span<const float> query, std::size_t k,
                                       const SearchFilter& filter) const = 0;

  // Writes the index to `path` atomically in its own format (docs/formats.md); each index type reads it
  // back with its static load.
  virtual void save(const std::filesystem::path& path) const = 0;
  // What the index holds in memory, bookkeeping included (an estimate); pages mapped from a file are not
  // counted.
  virtual std::size_t memory_bytes() const = 0;

 protected:
  VectorIndex() = default;
  VectorIndex(const VectorIndex&) = default;
  VectorIndex(VectorIndex&&) = default;
  VectorIndex& operator=(const VectorIndex&) = default;
  VectorIndex& operator=(VectorIndex&&) = default;
};

}  // namespace persona
