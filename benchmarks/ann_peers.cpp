#include "ann_peers.hpp"

#include <algorithm>
#include <thread>
#include <vector>

#if PERSONA_HAVE_HNSWLIB
#include <hnswlib/hnswlib.h>
#endif
#if PERSONA_HAVE_FAISS
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVFFlat.h>
#include <omp.h>
#endif

namespace persona::bench {

#if PERSONA_HAVE_HNSWLIB
namespace {
class Hnswlib final : public PeerIndex {
 public:
  Hnswlib(std::size_t dim, std::size_t capacity, std::size_t M, std::size_t ef_construction)
      : space_(dim), index_(&space_, capacity, M, ef_construction, 100), dim_(dim) {}
  void build(const float* data, std::size_t n, int threads) override {
    // hnswlib's own python binding splits the rows over threads the same way.
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        for (std::size_t i = static_cast<std::size_t>(t); i < n; i += static_cast<std::size_t>(threads)) {
          index_.addPoint(data + i * dim_, i);
        }
      });
    }
    for (auto& th : pool) th.join();
  }
  void set_breadth(std::size_t ef) override { index_.setEf(ef); }
  void search(const float* query, std::size_t k, std::int64_t* labels) override {
    auto result = index_.searchKnn(query, k);
    for (std::size_t i = result.size(); i-- > 0; result.pop())
      labels[i] = static_cast<std::int64_t>(result.top().second);
  }
  std::size_t memory_bytes() const override { return bytes_of(index_); }

  // Level-0 block, upper link lists, levels, one lock per element and the 65536 update locks.
  static std::size_t bytes_of(const hnswlib::HierarchicalNSW<float>& index) {
    std::size_t upper = 0;
    for (std::size_t i = 0; i < index.cur_element_count; ++i) {
      upper += static_cast<std::size_t>(index.element_levels_[i]) * index.size_links_per_element_;
    }
    return index.max_elements_ * (index.size_data_per_element_ + sizeof(int) + sizeof(std::mutex) + sizeof(void*)) +
           upper + index.link_list_update_locks_.size() * sizeof(std::mutex) +
           index.max_elements_ * sizeof(unsigned short);  // the visited list
  }

 private:
  hnswlib::L2Space space_;
  hnswlib::HierarchicalNSW<float> index_;
  std::size_t dim_;
};
}  // namespace

std::unique_ptr<PeerIndex> make_hnswlib(std::size_t dim, std::size_t capacity, std::size_t M, std::size_t efc) {
  return std::make_unique<Hnswlib>(dim, capacity, M, efc);
}
std::size_t hnswlib_empty_bytes(std::size_t dim, std::size_t M) {
  hnswlib::L2Space space(dim);
  const hnswlib::HierarchicalNSW<float> index(&space, 0, M, 200, 100);
  return Hnswlib::bytes_of(index);
}
#else
std::unique_ptr<PeerIndex> make_hnswlib(std::size_t, std::size_t, std::size_t, std::size_t) { return nullptr; }
std::size_t hnswlib_empty_bytes(std::size_t, std::size_t) { return 0; }
#endif

#if PERSONA_HAVE_FAISS
namespace {
class Faiss final : public PeerIndex {
 public:
  explicit Faiss(std::unique_ptr<faiss::Index> index, std::unique_ptr<faiss::Index> quantizer = nullptr)
      : quantizer_(std::move(quantizer)), index_(std::move(index)) {}
  void build(const float* data, std::size_t n, int threads) override {
    omp_set_num_threads(threads);
    // k-means on a sample of 64 points per list (Debian's FAISS runs on the reference BLAS).
    if (!index_->is_trained) {
      const auto* ivf = dynamic_cast<const faiss::IndexIVF*>(index_.get());
      const std::size_t sample = ivf ? std::min(n, 64 * ivf->nlist) : n;
      index_->train(static_cast<faiss::Index::idx_t>(sample), data);
    }
    index_->add(static_cast<faiss::Index::idx_t>(n), data);
    omp_set_num_threads(1);
  }
  void set_breadth(std::size_t breadth) override {
    if (auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(index_.get())) hnsw->hnsw.efSearch = static_cast<int>(breadth);
    if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(index_.get())) ivf->nprobe = breadth;
  }
  void search(const float* query, std::size_t k, std::int64_t* labels) override {
    std::vector<float> distances(k);
    std::vector<faiss::Index::idx_t> ids(k);
    index_->search(1, query, static_cast<faiss::Index::idx_t>(k), distances.data(), ids.data());
    for (std::size_t i = 0; i < k; ++i) labels[i] = ids[i];
  }
  std::size_t memory_bytes() const override {
    if (auto* hnsw = dynamic_cast<const faiss::IndexHNSW*>(index_.get())) {
      return hnsw->ntotal * hnsw->d * sizeof(float) + hnsw->hnsw.neighbors.size() * sizeof(faiss::HNSW::storage_idx_t) +
             hnsw->hnsw.levels.size() * sizeof(int) + hnsw->hnsw.offsets.size() * sizeof(std::size_t);
    }
    return index_->ntotal * (index_->d * sizeof(float) + sizeof(faiss::Index::idx_t));
  }

 private:
  std::unique_ptr<faiss::Index> quantizer_;
  std::unique_ptr<faiss::Index> index_;
};
}  // namespace

std::unique_ptr<PeerIndex> make_faiss_hnsw(std::size_t dim, std::size_t M, std::size_t efc) {
  auto index = std::make_unique<faiss::IndexHNSWFlat>(static_cast<int>(dim), static_cast<int>(M));
  index->hnsw.efConstruction = static_cast<int>(efc);
  return std::make_unique<Faiss>(std::move(index));
}
std::unique_ptr<PeerIndex> make_faiss_ivf(std::size_t dim, std::size_t nlist) {
  auto quantizer = std::make_unique<faiss::IndexFlatL2>(static_cast<faiss::Index::idx_t>(dim));
  auto index = std::make_unique<faiss::IndexIVFFlat>(quantizer.get(), dim, nlist);
  return std::make_unique<Faiss>(std::move(index), std::move(quantizer));
}
#else
std::unique_ptr<PeerIndex> make_faiss_hnsw(std::size_t, std::size_t, std::size_t) { return nullptr; }
std::unique_ptr<PeerIndex> make_faiss_ivf(std::size_t, std::size_t) { return nullptr; }
#endif

std::string missing_peers() {
  std::string missing;
#if !PERSONA_HAVE_HNSWLIB
  missing += "hnswlib (apt-get install libhnswlib-dev) ";
#endif
#if !PERSONA_HAVE_FAISS
  missing += "FAISS (apt-get install libfaiss-dev) ";
#endif
  return missing;
}

}  // namespace persona::bench
