// FlatIndex: exact nearest-neighbour search by scanning every vector (SIMD distances): the oracle for
// HnswIndex and the right index for a small tenant. Labels are unique; a tenant id per vector.
#pragma once

#include "persona/ann/search.hpp"
#include "persona/ann/vector_index.hpp"
#include "persona/core/tensor.hpp"

#include <cstddef>
#include <filesystem>
#include <span>
#include <unordered_map>
#include <vector>

namespace persona {

class FlatIndex final : public VectorIndex {
 public:
  explicit FlatIndex(std::size_t dim, Metric metric = Metric::l2);

  // Writes the index to `path` atomically (temporary file, fsync, rename): the format of
  // docs/formats.md, versioned and checksummed.
  void save(const std::filesystem::path& path) const override;
  // Reads an index written by save. Error io_error (unreadable), corrupt_data (truncated, checksum
  // mismatch, a count, dim or metric out of range, a non-finite value, a label twice), unsupported (a
  // newer format version, naming both).
  static FlatIndex load(const std::filesystem::path& path);

  using VectorIndex::add;
  // Error shape_mismatch for a vector of another length, invalid_argument for NaN or infinity or a label
  // already present (or for cosine, a zero vector).
  void add(VectorLabel label, std::span<const float> vector, TenantId tenant) override;
  // vectors [n, dim], one label and tenant per row, added in row order as add would; a row add refuses
  // throws (the first such) after the other rows are in.
  void add(std::span<const VectorLabel> labels, TensorView<const float> vectors,
           std::span<const TenantId> tenants) override;
  // Error not_found for an unknown label, permission_denied for another tenant's.
  void remove(VectorLabel label, TenantId tenant) override;
  bool contains(VectorLabel label, TenantId tenant) const noexcept override;

  // The k nearest vectors that pass the filter, closest first (ties: lower label first). Fewer than k
  // when fewer pass; k = 0 is Error invalid_argument.
  std::vector<Neighbor> search(std::span<const float> query, std::size_t k, const SearchFilter& filter) const override;

  std::size_t dim() const noexcept override { return dim_; }
  Metric metric() const noexcept override { return metric_; }
  std::size_t size() const noexcept override { return labels_.size(); }
  std::size_t memory_bytes() const override;

 private:
  std::size_t dim_;
  Metric metric_;
  std::vector<float> vectors_;  // [size, dim], as prepared (normalized for cosine)
  std::vector<VectorLabel> labels_;
  std::vector<TenantId> tenants_;
  std::unordered_map<VectorLabel, std::size_t> slots_;
};

}  // namespace persona
