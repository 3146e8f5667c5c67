// HnswIndex: approximate nearest-neighbour search over a hierarchical navigable small-world graph
// (Malkov & Yashunin), with a tenant id per vector, tenant-filtered search that stays exact for small
// tenants, predicate filters, f32 or int8 storage, deletes whose slots later inserts reuse, updates,
// compaction, inserts from many threads and searches while inserts run.
#pragma once

#include "persona/ann/search.hpp"
#include "persona/ann/vector_index.hpp"
#include "persona/core/tensor.hpp"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <vector>

namespace persona {

namespace detail {
struct HnswState;  // src/ann/hnsw_state.hpp
}  // namespace detail

// How the index keeps its vectors for the graph walk.
enum class VectorStorage : std::uint8_t {
  f32,   // 4 bytes per element
  int8,  // 1 byte per element plus 16 per vector (scale, offset and norm of each vector's own range)
};

struct HnswConfig {
  std::size_t dim = 0;
  Metric metric = Metric::l2;
  std::size_t M = 16;                 // links per node on the upper layers; 2 M on layer 0 (hnswlib's M)
  std::size_t ef_construction = 200;  // candidates kept while linking a new vector
  // Candidates kept while searching (at least k). The default keeps recall@10 >= 0.95 even on uniform
  // 128-d data (hnswlib's graph reaches 0.86 there at 64); lower it for speed where recall allows.
  std::size_t ef_search = 200;
  std::uint64_t seed = 100;  // of the level draws
  // A filtered search over at most this many candidate vectors (a small tenant) scans them exactly: a
  // filtered walk of the graph loses recall when few vectors pass (Qdrant and Weaviate switch alike).
  std::size_t exact_search_limit = 4096;
  VectorStorage storage = VectorStorage::f32;
  // int8 storage: also keep the f32 vectors, build the graph from them and re-rank each search's best
  // candidates exactly (in RAM, or in the file when loaded with LoadMode::map). Without them an int8
  // index holds a quarter of the vector bytes and returns int8 distances.
  bool keep_f32 = true;
  // int8 with f32 kept: how many of the walk's best candidates are re-ranked exactly, as a multiple of k.
  std::size_t rerank_factor = 4;
};

// How load reads the vectors: into memory, or mapped from the file (pages are read on first use and
// may be dropped by the kernel under memory pressure; later writes copy the touched pages).
enum class LoadMode : std::uint8_t { read, map };

struct HnswStats {
  std::size_t vectors = 0;       // live (not deleted)
  std::size_t deleted = 0;       // marked, still in the graph
  std::size_t vector_bytes = 0;  // stored vectors (f32 and int8 rows), mapped ones included
  std::size_t graph_bytes = 0;   // links on every layer
  std::size_t mapped_bytes = 0;  // of vector_bytes, those still in the mapped file (LoadMode::map)
  std::size_t bytes = 0;         // everything the index holds in memory, bookkeeping included; not mapped
  double bytes_per_vector() const noexcept {
    return vectors == 0 ? 0.0 : static_cast<double>(bytes) / static_cast<double>(vectors);
  }
};

class HnswIndex final : public VectorIndex {
 public:
  explicit HnswIndex(const HnswConfig& config);
  ~HnswIndex();
  HnswIndex(HnswIndex&&) noexcept;
  HnswIndex& operator=(HnswIndex&&) noexcept;
  HnswIndex(const HnswIndex&) = delete;
  HnswIndex& operator=(const HnswIndex&) = delete;

  // Writes the index to `path` atomically (temporary file, fsync, rename): the format of docs/formats.md,
  // versioned and checksummed. Not while another thread adds or removes.
  void save(const std::filesystem::path& path) const override;
  // Reads an index written by save. Error io_error (unreadable), corrupt_data (truncated, checksum
  // mismatch, any count, level, link or label out of range, a non-finite vector element or int8 row
  // scale, offset or norm), unsupported (a newer format version, naming both).
  static HnswIndex load(const std::filesystem::path& path, LoadMode mode = LoadMode::read);

  using VectorIndex::add;
  // Safe to call from several threads at once, and while other threads search. Error shape_mismatch for
  // a vector of another length, invalid_argument for NaN or infinity, a label already present, or a zero
  // vector under cosine.
  void add(VectorLabel label, std::span<const float> vector, TenantId tenant) override;
  // vectors [n, dim], one label and tenant per row; inserted on oneTBB workers. A row add refuses throws
  // (one of them) after the other rows are in.
  void add(std::span<const VectorLabel> labels, TensorView<const float> vectors,
           std::span<const TenantId> tenants) override;
  // Marks the vector deleted: searches skip it; it keeps routing the graph until a later add reuses its
  // slot or compact() drops it. Error not_found if unknown, permission_denied for another tenant's.
  void remove(VectorLabel label, TenantId tenant) override;
  // Replaces the vector of `tenant`'s `label` and relinks it; the vector stays the tenant's (moving a
  // vector to another tenant is a remove and an add). A search running meanwhile may miss the label; it
  // never sees a half-written vector. Errors as add and remove.
  void update(VectorLabel label, std::span<const float> vector, TenantId tenant);
  // Drops the deleted vectors: repairs the links that ran through them and moves the live ones together,
  // giving the memory back. Blocks searches and inserts while it runs.
  void compact();
  bool contains(VectorLabel label, TenantId tenant) const override;

  // The k nearest live vectors passing the filter, closest first (ties: lower label first); fewer when
  // fewer exist. Keeps ef candidates on the walk; ef = 0 uses config().ef_search. Safe from many threads,
  // also while add runs.
  std::vector<Neighbor> search(std::span<const float> query, std::size_t k, const SearchFilter& filter,
                               std::size_t ef) const;
  std::vector<Neighbor> search(std::span<const float> query, std::size_t k, const SearchFilter& filter) const override {
    return search(query, k, filter, 0);
  }

  const HnswConfig& config() const noexcept;
  std::size_t dim() const noexcept override { return config().dim; }
  Metric metric() const noexcept override { return config().metric; }
  std::size_t size() const noexcept override;  // live vectors
  HnswStats stats() const;
  std::size_t memory_bytes() const override { return stats().bytes; }

 private:
  std::unique_ptr<detail::HnswState> state_;
};

}  // namespace persona
