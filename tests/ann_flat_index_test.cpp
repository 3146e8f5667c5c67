// Tests of the exact index: FlatIndex against a hand-computed scan for every metric and filter, its
// save/load and batch add, and FlatIndex and HnswIndex through one VectorIndex&. HnswIndex: ann_test.cpp.
#include "ann_support.hpp"
#include "test_support.hpp"

#include <persona/ann/flat_index.hpp>
#include <persona/ann/hnsw_index.hpp>
#include <persona/ann/vector_index.hpp>
#include <persona/core/error.hpp>
#include <persona/core/file_io.hpp>

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <type_traits>
#include <vector>

using namespace persona;
using namespace persona::test;

TEST_CASE("FlatIndex returns the exact k nearest, filtered, for every metric", "[ann]") {
  const std::size_t dim = 7;  // odd: SIMD tails
  const std::vector<float> points = make_points(300, dim, 0, 1), queries = make_points(20, dim, 0, 2);
  for (Metric metric : {Metric::l2, Metric::inner_product, Metric::cosine}) {
    FlatIndex index(dim, metric);
    for (std::size_t i = 0; i < 300; ++i) index.add(1000 + i, row(points, dim, i), i % 3);
    for (std::size_t qi = 0; qi < 20; ++qi) {
      const auto q = row(queries, dim, qi);
      // By hand: every distance in double.
      std::vector<Neighbor> all;
      double qnorm = 0.0;
      for (float x : q) qnorm += double(x) * x;
      for (std::size_t i = 0; i < 300; ++i) {
        if (i % 3 != 1) continue;
        double l2 = 0.0, ip = 0.0, pnorm = 0.0;
        for (std::size_t d = 0; d < dim; ++d) {
          const double a = q[d], b = points[i * dim + d];
          l2 += (a - b) * (a - b);
          ip += a * b;
          pnorm += b * b;
        }
        const double dist = metric == Metric::l2              ? l2
                            : metric == Metric::inner_product ? 1.0 - ip
                                                              : 1.0 - ip / std::sqrt(qnorm * pnorm);
        all.push_back({1000 + i, static_cast<float>(dist)});
      }
      std::sort(all.begin(), all.end(), [](const Neighbor& a, const Neighbor& b) { return a.distance < b.distance; });
      const auto found = index.search(q, 5, SearchFilter::only_tenant(1));
      REQUIRE(found.size() == 5);
      for (std::size_t j = 0; j < 5; ++j) {
        CHECK(found[j].label == all[j].label);
        CHECK(found[j].distance == Approx(all[j].distance).margin(1e-5));
      }
    }
  }
  FlatIndex index(dim);
  for (std::size_t i = 0; i < 10; ++i) index.add(i, row(points, dim, i), 0);
  CHECK(index.search(row(queries, dim, 0), 50, SearchFilter::all_tenants()).size() ==
        10);  // k beyond the size: what exists
  const auto even = index.search(row(queries, dim, 0), 10,
                                 SearchFilter::all_tenants().where([](VectorLabel l) { return l % 2 == 0; }));
  CHECK(even.size() == 5);
  for (const Neighbor& n : even) CHECK(n.label % 2 == 0);
  index.remove(4, 0);
  CHECK_FALSE(index.contains(4, 0));
  CHECK(index.size() == 9);
  for (const Neighbor& n : index.search(row(queries, dim, 0), 10, SearchFilter::all_tenants())) CHECK(n.label != 4);
  std::vector<float> bad(dim, 0.0f);
  PERSONA_REQUIRE_ERROR(index.add(3, bad, 0), invalid_argument, "label 3 is already in the index");
  PERSONA_REQUIRE_ERROR(index.add(99, std::vector<float>(dim + 1), 0), shape_mismatch,
                        "has 8 elements; the index has dim 7");
  bad[2] = NAN;
  PERSONA_REQUIRE_ERROR(index.add(99, bad, 0), invalid_argument, "element 2 is nan");
  PERSONA_REQUIRE_ERROR(index.search(row(queries, dim, 0), 0, SearchFilter::all_tenants()), invalid_argument, "k is 0");
  PERSONA_REQUIRE_ERROR(index.remove(12345, 0), not_found, "label 12345 is not in the index");
  FlatIndex cosine(dim, Metric::cosine);
  PERSONA_REQUIRE_ERROR(cosine.add(1, std::vector<float>(dim, 0.0f), 0), invalid_argument, "is zero");
}

TEST_CASE("FlatIndex load(save(index)) answers identically, bad files are clear Errors", "[ann]") {
  const std::size_t dim = 9, n = 400;
  const std::vector<float> points = make_points(n, dim, 8, 21), queries = make_points(30, dim, 8, 22);
  const auto folder = std::filesystem::temp_directory_path() / fmt::format("persona_flat_{}", ::getpid());
  std::filesystem::create_directories(folder);
  const auto path = folder / "index.flat";
  const auto odd = [](VectorLabel l) { return l % 2 == 1; };
  for (Metric metric : {Metric::l2, Metric::inner_product, Metric::cosine}) {
    FlatIndex index(dim, metric);
    for (std::size_t i = 0; i < n; ++i) index.add(i * 7 + 3, row(points, dim, i), i % 4);
    for (std::size_t i = 0; i < n; i += 5) index.remove(i * 7 + 3, i % 4);  // moves rows: slot order is not label order
    index.save(path);
    const FlatIndex loaded = FlatIndex::load(path);
    CHECK(loaded.dim() == dim);
    CHECK(loaded.metric() == metric);
    CHECK(loaded.size() == index.size());
    CHECK(loaded.contains(10, 1));
    CHECK_FALSE(loaded.contains(10, 0));
    CHECK_FALSE(loaded.contains(3, 0));
    for (std::size_t i = 0; i < 30; ++i) {
      const auto q = row(queries, dim, i);
      CHECK(loaded.search(q, 10, SearchFilter::all_tenants()) == index.search(q, 10, SearchFilter::all_tenants()));
      CHECK(loaded.search(q, 10, SearchFilter::only_tenant(i % 4)) ==
            index.search(q, 10, SearchFilter::only_tenant(i % 4)));
      CHECK(loaded.search(q, 10, SearchFilter::all_tenants().where(odd)) ==
            index.search(q, 10, SearchFilter::all_tenants().where(odd)));
    }
  }
  const std::vector<std::byte> bytes = read_file(path);
  const auto write = [&](const std::vector<std::byte>& b) {
    const auto bad = folder / "bad.flat";
    write_file_atomically(bad, b);
    return bad;
  };
  // Damage behind a recomputed checksum, for the checks after it.
  const auto resealed = [&](std::vector<std::byte> b) {
    const std::size_t body = b.size() - sizeof(std::uint64_t);
    const std::uint64_t sum = file_checksum(std::span<const std::byte>(b.data(), body));
    std::memcpy(b.data() + body, &sum, sizeof(sum));
    return b;
  };
  const auto with_u64 = [&](std::size_t offset, std::uint64_t value) {
    auto b = bytes;
    std::memcpy(b.data() + offset, &value, sizeof(value));
    return resealed(b);
  };
  for (std::size_t keep :
       {std::size_t{0}, std::size_t{12}, std::size_t{39}, std::size_t{40}, bytes.size() / 2, bytes.size() - 1}) {
    PERSONA_REQUIRE_ERROR(FlatIndex::load(write({bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(keep)})),
                          corrupt_data, "bad.flat");
  }
  auto flipped = bytes;
  flipped[bytes.size() / 2] ^= std::byte{1};
  PERSONA_REQUIRE_ERROR(FlatIndex::load(write(flipped)), corrupt_data, "checksum mismatch");
  auto magic = bytes;
  magic[4] = std::byte{'X'};
  PERSONA_REQUIRE_ERROR(FlatIndex::load(write(magic)), corrupt_data, "not a persona flat index");
  check_index_versions(bytes, write, [](const std::filesystem::path& p) { return FlatIndex::load(p); });
  // A count far beyond the file is refused before anything is allocated; so is one row too many or few.
  PERSONA_REQUIRE_ERROR(FlatIndex::load(write(with_u64(24, std::uint64_t{1} << 60))), corrupt_data,
                        "does not match the");
  const std::uint64_t count = (bytes.size() - 40) / (16 + 4 * dim);
  PERSONA_REQUIRE_ERROR(FlatIndex::load(write(with_u64(24, count + 1))), corrupt_data, "does not match the");
  PERSONA_REQUIRE_ERROR(FlatIndex::load(write(with_u64(24, count - 1))), corrupt_data, "does not match the");
  PERSONA_REQUIRE_ERROR(FlatIndex::load(write(with_u64(16, 0))), corrupt_data, "dim 0 out of range");
  auto metric = bytes;
  metric[12] = std::byte{7};
  PERSONA_REQUIRE_ERROR(FlatIndex::load(write(resealed(metric))), corrupt_data, "metric 7 unknown");
  auto twice = bytes;
  std::memcpy(twice.data() + 40, twice.data() + 32, sizeof(VectorLabel));  // slot 1 takes slot 0's label
  PERSONA_REQUIRE_ERROR(FlatIndex::load(write(resealed(twice))), corrupt_data, "appears twice");
  const float nan = NAN;
  auto not_finite = bytes;
  std::memcpy(not_finite.data() + 32 + 16 * count + 4 * (dim + 2), &nan, sizeof(nan));
  PERSONA_REQUIRE_ERROR(FlatIndex::load(write(resealed(not_finite))), corrupt_data, "vector 1 element 2 is nan");
  PERSONA_REQUIRE_ERROR(FlatIndex::load(folder / "missing.flat"), io_error, "missing.flat");
  // An empty index round-trips too.
  FlatIndex empty(dim, Metric::cosine);
  empty.save(folder / "empty.flat");
  const FlatIndex empty_back = FlatIndex::load(folder / "empty.flat");
  CHECK(empty_back.size() == 0);
  CHECK(empty_back.metric() == Metric::cosine);
  std::filesystem::remove_all(folder);
}

TEST_CASE("FlatIndex batch add equals adding the rows one by one", "[ann]") {
  const std::size_t dim = 11, n = 250;
  const std::vector<float> points = make_points(n, dim, 5, 31), queries = make_points(20, dim, 5, 32);
  std::vector<VectorLabel> labels(n);
  std::vector<TenantId> tenants(n);
  for (std::size_t i = 0; i < n; ++i) {
    labels[i] = 5000 - 3 * i;
    tenants[i] = i % 3;
  }
  const TensorView<const float> rows(points.data(), Shape{n, dim});
  for (bool with_tenants : {true, false}) {
    FlatIndex one_by_one(dim, Metric::cosine), batch(dim, Metric::cosine);
    for (std::size_t i = 0; i < n; ++i) one_by_one.add(labels[i], row(points, dim, i), with_tenants ? tenants[i] : 5);
    if (with_tenants) {
      batch.add(labels, rows, std::span<const TenantId>(tenants));
    } else {
      batch.add(labels, rows, 5);  // every row to one tenant
    }
    CHECK(batch.size() == one_by_one.size());
    for (std::size_t i = 0; i < 20; ++i) {
      const auto q = row(queries, dim, i);
      CHECK(batch.search(q, 10, SearchFilter::all_tenants()) == one_by_one.search(q, 10, SearchFilter::all_tenants()));
      CHECK(batch.search(q, 10, SearchFilter::only_tenant(1)) ==
            one_by_one.search(q, 10, SearchFilter::only_tenant(1)));
    }
  }
  FlatIndex index(dim);
  PERSONA_REQUIRE_ERROR(index.add(labels, TensorView<const float>(points.data(), Shape{n - 1, dim}), 0), shape_mismatch,
                        "expected contiguous [250, 11]");
  PERSONA_REQUIRE_ERROR(index.add(labels, rows, std::span<const TenantId>(tenants).first(3)), shape_mismatch,
                        "3 tenants for 250 labels");
  CHECK(index.size() == 0);
  // A refused row (here a label already present) throws after the other rows are in, as HnswIndex does.
  index.add(labels[7], row(points, dim, 7), 0);
  PERSONA_REQUIRE_ERROR(index.add(labels, rows, 0), invalid_argument, "is already in the index");
  CHECK(index.size() == n);
}

namespace {

// The same calls through the interface, whichever index is behind it.
std::vector<VectorLabel> top1_through_interface(VectorIndex& index, const std::vector<float>& points,
                                                const std::vector<float>& queries, std::size_t dim) {
  const std::size_t n = points.size() / dim;
  std::vector<VectorLabel> labels(n);
  std::vector<TenantId> tenants(n);
  for (std::size_t i = 0; i < n; ++i) {
    labels[i] = 100 + i;
    tenants[i] = i % 2;
  }
  index.add(labels, TensorView<const float>(points.data(), Shape{n, dim}), tenants);
  index.add(7, row(queries, dim, 0), 1);  // the first query's own vector
  index.remove(100, 0);
  CHECK(index.dim() == dim);
  CHECK(index.metric() == Metric::l2);
  CHECK(index.size() == n);
  CHECK(index.contains(7, 1));
  CHECK_FALSE(index.contains(100, 0));
  // A label is its owner's: another tenant can neither see, remove nor change it.
  CHECK_FALSE(index.contains(7, 0));
  PERSONA_REQUIRE_ERROR(index.remove(7, 0), permission_denied, "label 7 is not tenant 0's");
  CHECK(index.contains(7, 1));
  CHECK(index.size() == n);
  CHECK(index.memory_bytes() >= n * dim * sizeof(float));
  std::vector<VectorLabel> top1;
  for (std::size_t i = 0; i < queries.size() / dim; ++i) {
    for (const SearchFilter& filter : {SearchFilter::all_tenants(), SearchFilter::only_tenant(0)}) {
      const auto found = index.search(row(queries, dim, i), 1, filter);
      REQUIRE(found.size() == 1);
      top1.push_back(found[0].label);
    }
  }
  return top1;
}

}  // namespace

TEST_CASE("FlatIndex and HnswIndex give the same top-1 through VectorIndex&", "[ann]") {
  // Few, well-separated vectors: the graph search is exact here.
  const std::size_t dim = 8;
  const std::vector<float> points = make_points(60, dim, 0, 41), queries = make_points(15, dim, 0, 42);
  FlatIndex flat(dim);
  HnswIndex hnsw(HnswConfig{dim});
  const auto from_flat = top1_through_interface(flat, points, queries, dim);
  const auto from_hnsw = top1_through_interface(hnsw, points, queries, dim);
  CHECK(from_flat == from_hnsw);
  CHECK(from_flat.at(0) == 7);
  // Searching is always for a named tenant or, by name, for every tenant: no filter is no choice.
  STATIC_REQUIRE_FALSE(std::is_default_constructible_v<SearchFilter>);
  // save through the interface; each type loads its own file.
  const auto folder = std::filesystem::temp_directory_path() / fmt::format("persona_vector_index_{}", ::getpid());
  std::filesystem::create_directories(folder);
  for (VectorIndex* index : {static_cast<VectorIndex*>(&flat), static_cast<VectorIndex*>(&hnsw)}) {
    index->save(folder / "index.bin");
    const bool is_flat = index == &flat;
    const std::size_t size =
        is_flat ? FlatIndex::load(folder / "index.bin").size() : HnswIndex::load(folder / "index.bin").size();
    CHECK(size == index->size());
  }
  std::filesystem::remove_all(folder);
}
