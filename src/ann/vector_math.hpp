// The pieces both indexes use: checking and preparing a vector for a metric, the distance through ann's
// SIMD distance kernels (ann/kernels/distance_kernel_table.hpp), and a bounded set of the k best neighbours.
#pragma once

#include "ann/kernels/distance_kernel_table.hpp"
#include "persona/ann/search.hpp"
#include "persona/core/error.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <vector>

namespace persona::detail {

// Checks the length and values of `vector` and writes what the index stores (normalized for cosine).
inline void prepare_vector(Metric metric, std::size_t dim, std::span<const float> vector, float* out,
                           const char* function, const char* what) {
  PERSONA_CHECK_AT(function, shape_mismatch, vector.size() == dim, "{} has {} elements; the index has dim {}", what,
                   vector.size(), dim);
  double norm = 0.0;
  for (std::size_t i = 0; i < dim; ++i) {
    PERSONA_CHECK_AT(function, invalid_argument, std::isfinite(vector[i]),
                     "{} element {} is {}; vectors must be finite", what, i, vector[i]);
    norm += static_cast<double>(vector[i]) * vector[i];
  }
  if (metric == Metric::cosine) {
    PERSONA_CHECK_AT(function, invalid_argument, norm != 0.0, "{} is zero: no cosine", what);
    const double inverse = 1.0 / std::sqrt(norm);
    for (std::size_t i = 0; i < dim; ++i) out[i] = static_cast<float>(vector[i] * inverse);
  } else {
    std::copy(vector.begin(), vector.end(), out);
  }
}

// NaN as the farthest distance: finite vectors large enough to overflow (inf - inf) must not leave the
// candidates unordered.
inline float ordered(float distance) noexcept {
  return distance == distance ? distance : std::numeric_limits<float>::infinity();
}

inline float distance(const persona::detail::DistanceKernelTable& k, Metric metric, const float* a, const float* b,
                      std::size_t dim) noexcept {
  return ordered(metric == Metric::l2 ? k.squared_l2(a, b, dim) : 1.0f - k.dot(a, b, dim));
}

// Closer first; equal distances by label, so results do not depend on insertion or thread order.
inline bool closer(const Neighbor& a, const Neighbor& b) noexcept {
  return a.distance < b.distance || (a.distance == b.distance && a.label < b.label);
}

// The k best neighbours offered so far (a max-heap on `closer`).
class TopK {
 public:
  explicit TopK(std::size_t k) : k_(k) { heap_.reserve(std::min<std::size_t>(k, 1024)); }
  bool full() const noexcept { return heap_.size() == k_; }
  // The worst kept distance (infinity until full).
  float bound() const noexcept { return full() ? heap_.front().distance : INFINITY; }
  void offer(const Neighbor& n) {
    if (!full()) {
      heap_.push_back(n);
      std::push_heap(heap_.begin(), heap_.end(), closer);
    } else if (closer(n, heap_.front())) {
      std::pop_heap(heap_.begin(), heap_.end(), closer);
      heap_.back() = n;
      std::push_heap(heap_.begin(), heap_.end(), closer);
    }
  }
  std::vector<Neighbor> sorted() && {
    std::sort_heap(heap_.begin(), heap_.end(), closer);
    return std::move(heap_);
  }

 private:
  std::size_t k_;
  std::vector<Neighbor> heap_;
};

}  // namespace persona::detail
