// What the vector-index tests share: clustered or uniform points, rows of them, recall against FlatIndex,
// and the index files' version rule.
#pragma once

#include <persona/ann/flat_index.hpp>
#include <persona/ann/search.hpp>

#include "test_support.hpp"

#include <filesystem>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <set>
#include <span>
#include <vector>

namespace persona::test {
// n points around `clusters` Gaussian centres drawn from `centre_seed` (uniform in [-1, 1]^dim when
// clusters is 0); queries are more points of the same clusters under another seed.
inline std::vector<float> make_points(std::size_t n, std::size_t dim, std::size_t clusters, std::uint32_t seed,
                                      std::uint32_t centre_seed = 1) {
  std::mt19937 centre_rng(centre_seed), rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::normal_distribution<float> spread(0.0f, 0.15f);
  std::vector<float> centres(std::max<std::size_t>(clusters, 1) * dim);
  for (float& c : centres) c = uniform(centre_rng);
  std::vector<float> points(n * dim);
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t c = clusters == 0 ? 0 : rng() % clusters;
    for (std::size_t d = 0; d < dim; ++d) {
      points[i * dim + d] = clusters == 0 ? uniform(rng) : centres[c * dim + d] + spread(rng);
    }
  }
  return points;
}

inline std::span<const float> row(const std::vector<float>& points, std::size_t dim, std::size_t i) {
  return {points.data() + i * dim, dim};
}

// Mean over the queries of |found ∩ exact| / |exact|.
template <class Search>
double recall(const FlatIndex& flat, const std::vector<float>& queries, std::size_t dim, std::size_t k,
              const SearchFilter& filter, Search&& search) {
  double total = 0.0;
  const std::size_t count = queries.size() / dim;
  for (std::size_t i = 0; i < count; ++i) {
    const auto exact = flat.search(row(queries, dim, i), k, filter);
    const auto found = search(row(queries, dim, i));
    std::set<VectorLabel> truth;
    for (const Neighbor& n : exact) truth.insert(n.label);
    std::size_t hits = 0;
    for (const Neighbor& n : found) hits += truth.count(n.label);
    total += exact.empty() ? 1.0 : static_cast<double>(hits) / static_cast<double>(exact.size());
  }
  return total / static_cast<double>(count);
}

// The index files' version rule (src/ann/binary_io.hpp) on a saved file's `bytes`: a newer version and
// the FNV-checksummed version 1 are refused naming both; 0 does not exist. `write` puts bytes in a file.
template <class Write, class Load>
void check_index_versions(const std::vector<std::byte>& bytes, const Write& write, const Load& load) {
  const auto with_version = [&](std::uint8_t version) {
    auto b = bytes;
    b[8] = std::byte{version};  // the version field (a u32 after the magic)
    return write(b);
  };
  PERSONA_REQUIRE_ERROR(load(with_version(3)), unsupported, "format version 3; this build reads version 2");
  PERSONA_REQUIRE_ERROR(load(with_version(1)), unsupported,
                        "format version 1 is no longer read (its checksum misses damage); this build reads version 2");
  PERSONA_REQUIRE_ERROR(load(with_version(0)), corrupt_data, "format version 0 does not exist");
}

}  // namespace persona::test
