// The peer libraries bench_ann races, behind one small interface: hnswlib (header-only, compiled in
// ann_peers.cpp with AVX2 so that its own SIMD paths are on) and FAISS (IndexHNSWFlat, IndexIVFFlat).
// A factory returns null when the library was not found at configure time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace persona::bench {

class PeerIndex {
 public:
  virtual ~PeerIndex() = default;
  // data [n, dim], labels 0..n-1, on `threads` threads.
  virtual void build(const float* data, std::size_t n, int threads) = 0;
  // The search breadth: ef for the HNSW indexes, nprobe for IVF.
  virtual void set_breadth(std::size_t breadth) = 0;
  // The k nearest labels of one query, on the calling thread.
  virtual void search(const float* query, std::size_t k, std::int64_t* labels) = 0;
  virtual std::size_t memory_bytes() const = 0;
};

// L2 indexes with HNSW parameters M and ef_construction (IVF: nlist lists).
std::unique_ptr<PeerIndex> make_hnswlib(std::size_t dim, std::size_t capacity, std::size_t M,
                                        std::size_t ef_construction);
// Bytes hnswlib allocates for an empty index of this shape (0 when absent).
std::size_t hnswlib_empty_bytes(std::size_t dim, std::size_t M);
std::unique_ptr<PeerIndex> make_faiss_hnsw(std::size_t dim, std::size_t M, std::size_t ef_construction);
std::unique_ptr<PeerIndex> make_faiss_ivf(std::size_t dim, std::size_t nlist);
// Why a peer is missing ("" when all are present).
std::string missing_peers();

}  // namespace persona::bench
