// Tests of HnswIndex: recall against FlatIndex on clustered and uniform data (f32 and int8 storage),
// filtered search at several selectivities, tenant isolation, deletes, slot reuse, updates, compaction,
// save/load (read and mapped), parallel inserts and searches during inserts, removes and updates.
// FlatIndex and the shared VectorIndex interface: ann_flat_index_test.cpp.
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
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <vector>

using namespace persona;
using namespace persona::test;

TEST_CASE("HnswIndex recall@10 against FlatIndex at default parameters", "[ann]") {
  const std::size_t dim = 128, n = 5000;
  for (const auto& [clusters, metric] :
       {std::pair{std::size_t{100}, Metric::l2}, std::pair{std::size_t{0}, Metric::l2},
        std::pair{std::size_t{100}, Metric::cosine}, std::pair{std::size_t{100}, Metric::inner_product}}) {
    DYNAMIC_SECTION((clusters ? "clustered" : "uniform") << ", metric " << static_cast<int>(metric)) {
      const std::vector<float> points = make_points(n, dim, clusters, 3), queries = make_points(100, dim, clusters, 4);
      FlatIndex flat(dim, metric);
      HnswIndex hnsw(HnswConfig{dim, metric});
      std::vector<VectorLabel> labels(n);
      for (std::size_t i = 0; i < n; ++i) {
        labels[i] = i * 7 + 1;
        flat.add(labels[i], row(points, dim, i), 0);
      }
      hnsw.add(labels, TensorView<const float>(points.data(), Shape{n, dim}), 0);
      CHECK(hnsw.size() == n);
      const double r = recall(flat, queries, dim, 10, SearchFilter::all_tenants(), [&](std::span<const float> q) {
        return hnsw.search(q, 10, SearchFilter::all_tenants());
      });
      INFO("recall " << r);
      CHECK(r >= 0.95);
      const HnswStats stats = hnsw.stats();
      CHECK(stats.vectors == n);
      CHECK(stats.vector_bytes == n * dim * sizeof(float));
      CHECK(stats.graph_bytes >= n * 33 * sizeof(std::uint32_t));
    }
  }
}

TEST_CASE("int8 storage keeps recall@10 with and without the exact re-rank", "[ann]") {
  const std::size_t dim = 128, n = 3000;
  for (Metric metric : {Metric::l2, Metric::cosine}) {
    const std::vector<float> points = make_points(n, dim, 100, 3), queries = make_points(100, dim, 100, 4);
    FlatIndex flat(dim, metric);
    std::vector<VectorLabel> labels(n);
    for (std::size_t i = 0; i < n; ++i) {
      labels[i] = i;
      flat.add(i, row(points, dim, i), 0);
    }
    for (bool keep_f32 : {true, false}) {
      if (metric == Metric::cosine && keep_f32) continue;  // the re-rank is metric-blind; L2 covers it
      INFO("metric " << static_cast<int>(metric) << ", keep_f32 " << keep_f32);
      HnswConfig config{dim, metric};
      config.storage = VectorStorage::int8;
      config.keep_f32 = keep_f32;
      HnswIndex hnsw(config);
      hnsw.add(labels, TensorView<const float>(points.data(), Shape{n, dim}), 0);
      double worst_error = 0.0;
      const double r = recall(flat, queries, dim, 10, SearchFilter::all_tenants(), [&](std::span<const float> q) {
        auto found = hnsw.search(q, 10, SearchFilter::all_tenants());
        // Re-ranked distances are the exact ones; int8 ones are close.
        for (const Neighbor& nb : found) {
          double l2 = 0.0, dot = 0.0, qq = 0.0, pp = 0.0;
          for (std::size_t d = 0; d < dim; ++d) {
            const double a = q[d], b = points[nb.label * dim + d];
            l2 += (a - b) * (a - b);
            dot += a * b;
            qq += a * a;
            pp += b * b;
          }
          const double exact = metric == Metric::l2 ? l2 : 1.0 - dot / std::sqrt(qq * pp);
          worst_error = std::max(worst_error, std::fabs(exact - nb.distance) / (std::fabs(exact) + 0.01));
        }
        return found;
      });
      INFO("recall " << r << ", worst relative distance error " << worst_error);
      CHECK(r >= 0.95);
      CHECK(worst_error <= (keep_f32 ? 1e-5 : 0.03));
      const HnswStats stats = hnsw.stats();
      CHECK(stats.vector_bytes == n * ((keep_f32 ? dim * sizeof(float) : 0) + 16 + dim));
    }
  }
}

TEST_CASE("Parallel inserts give the recall of serial ones, searches run during inserts", "[ann]") {
  const std::size_t dim = 32, n = 4000;
  const std::vector<float> points = make_points(n, dim, 50, 5), queries = make_points(100, dim, 50, 6);
  FlatIndex flat(dim);
  std::vector<VectorLabel> labels(n);
  for (std::size_t i = 0; i < n; ++i) {
    labels[i] = i;
    flat.add(i, row(points, dim, i), 0);
  }
  HnswIndex serial(HnswConfig{dim});
  {
    ScopedNumThreads one(1);
    serial.add(labels, TensorView<const float>(points.data(), Shape{n, dim}), 0);
  }
  HnswIndex parallel(HnswConfig{dim});
  {
    ScopedNumThreads two(2);
    parallel.add(labels, TensorView<const float>(points.data(), Shape{n, dim}), 0);
  }
  const auto search = [](const HnswIndex& index) {
    return [&index](std::span<const float> q) { return index.search(q, 10, SearchFilter::all_tenants(), 32); };
  };
  const double r1 = recall(flat, queries, dim, 10, SearchFilter::all_tenants(), search(serial));
  const double r2 = recall(flat, queries, dim, 10, SearchFilter::all_tenants(), search(parallel));
  INFO("serial " << r1 << ", parallel " << r2);
  CHECK(r2 >= r1 - 0.01);

  // A second thread inserts while this one searches: every result is a label already added, sorted.
  HnswIndex live(HnswConfig{dim});
  for (std::size_t i = 0; i < 500; ++i) live.add(i, row(points, dim, i), 0);
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (std::size_t i = 500; i < n; ++i) live.add(i, row(points, dim, i), 0);
    done = true;
  });
  std::size_t searches = 0, bad = 0;
  while (!done || searches < 100) {
    const auto found = live.search(row(queries, dim, searches % 100), 10, SearchFilter::all_tenants());
    bad += found.size() == 10 ? 0 : 1;
    for (std::size_t j = 0; j < found.size(); ++j) {
      bad += found[j].label < n ? 0 : 1;
      if (j > 0) bad += found[j - 1].distance <= found[j].distance ? 0 : 1;
    }
    ++searches;
  }
  writer.join();
  CHECK(bad == 0);
  CHECK(live.size() == n);

  // One thread moves vectors between tenants (removes, inserts into the freed slots, updates) while this
  // one searches tenant 0: a result is always a label tenant 0 held at some moment of the search.
  HnswIndex churn(HnswConfig{dim});
  for (std::size_t i = 0; i < 1000; ++i) churn.add(2 * i, row(points, dim, i), 0);  // even labels: tenant 0
  done = false;
  std::thread mover([&] {
    for (std::size_t i = 0; i < 1000; ++i) {
      churn.remove(2 * i, 0);
      churn.add(2 * i + 1, row(points, dim, 1000 + i), 1);  // odd labels: tenant 1, in tenant 0's old slots
      churn.update(2 * i + 1, row(points, dim, 2000 + i), 1);
    }
    done = true;
  });
  std::size_t churn_searches = 0, foreign = 0;
  while (!done || churn_searches < 100) {
    const auto found = churn.search(row(queries, dim, churn_searches % 100), 10, SearchFilter::only_tenant(0), 64);
    for (std::size_t j = 0; j < found.size(); ++j) {
      foreign += found[j].label % 2 == 0 ? 0 : 1;
      if (j > 0) foreign += found[j - 1].distance <= found[j].distance ? 0 : 1;
    }
    ++churn_searches;
  }
  mover.join();
  CHECK(foreign == 0);
  CHECK(churn.size() == 1000);
  CHECK(churn.search(row(queries, dim, 0), 10, SearchFilter::only_tenant(0)).empty());
}

TEST_CASE("HnswIndex under threads adding, searching, updating, removing and compacting at once", "[ann][threads]") {
  // std::threads only (no oneTBB), so that ThreadSanitizer sees every hand-off: scripts/test.sh runs this
  // case under it. Tenant of label l: l % 3.
  const std::size_t dim = 16, first = 600, added = 1200;
  const std::vector<float> points = make_points(first + added + first, dim, 20, 31),
                           queries = make_points(30, dim, 20, 32);
  HnswIndex index(HnswConfig{.dim = dim, .M = 8, .ef_construction = 48, .ef_search = 64});
  for (std::size_t i = 0; i < first; ++i) index.add(i, row(points, dim, i), i % 3);
  std::atomic<int> running = 2;
  std::atomic<std::size_t> wrong = 0;
  std::thread adder([&] {
    for (std::size_t i = first; i < first + added; ++i) index.add(i, row(points, dim, i), i % 3);
    --running;
  });
  std::thread mutator([&] {  // of the first vectors: every fourth removed, the next one moved
    for (std::size_t i = 0; i < first; i += 4) {
      index.remove(i, i % 3);
      index.update(i + 1, row(points, dim, first + added + i), (i + 1) % 3);
      wrong += index.contains(i, i % 3) || !index.contains(i + 1, (i + 1) % 3) ? 1 : 0;
      wrong += index.contains(i + 1, (i + 2) % 3) ? 1 : 0;  // never another tenant's
    }
    --running;
  });
  std::thread searcher([&] {
    for (std::size_t s = 0; running > 0 || s < 50; ++s) {
      const TenantId t = s % 3;
      const auto found = index.search(row(queries, dim, s % 30), 10, SearchFilter::only_tenant(t));
      for (std::size_t j = 0; j < found.size(); ++j) {
        wrong += found[j].label % 3 == t ? 0 : 1;
        if (j > 0) wrong += found[j - 1].distance <= found[j].distance ? 0 : 1;
      }
      wrong += index.search(row(queries, dim, s % 30), 5, SearchFilter::all_tenants()).size() == 5 ? 0 : 1;
    }
  });
  for (int c = 0; c < 4 && running > 0; ++c) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    index.compact();
  }
  adder.join();
  mutator.join();
  searcher.join();
  CHECK(wrong == 0);
  CHECK(index.size() == first + added - first / 4);
  index.compact();
  CHECK(index.stats().deleted == 0);
  // What is left answers as the exact index over the same vectors does.
  FlatIndex flat(dim);
  for (std::size_t i = 0; i < first + added; ++i) {
    if (i < first && i % 4 == 0) continue;
    flat.add(i, row(points, dim, i < first && i % 4 == 1 ? first + added + i - 1 : i), i % 3);
  }
  for (TenantId t : {0u, 1u, 2u}) {
    const double r = recall(flat, queries, dim, 10, SearchFilter::only_tenant(t), [&](std::span<const float> q) {
      return index.search(q, 10, SearchFilter::only_tenant(t));
    });
    INFO("tenant " << t << " recall " << r);
    CHECK(r >= 0.95);
  }
}

TEST_CASE("Tenant-filtered search keeps its recall at every selectivity and never shows another tenant", "[ann]") {
  const std::size_t dim = 32, n = 20000;
  const std::vector<float> points = make_points(n, dim, 100, 7), queries = make_points(50, dim, 100, 8);
  // Tenant sizes: 50%, 10%, 1%, 0.1% of the rows, the rest spread over 1,000 small tenants.
  std::vector<TenantId> tenants(n);
  std::vector<VectorLabel> labels(n);
  for (std::size_t i = 0; i < n; ++i) {
    labels[i] = i;
    const std::size_t r = (i * 7919) % 1000;  // spread each tenant over the clusters
    tenants[i] = r < 500 ? 1 : r < 600 ? 2 : r < 610 ? 3 : r < 611 ? 4 : 100 + i % 1000;
  }
  FlatIndex flat(dim);
  for (std::size_t i = 0; i < n; ++i) flat.add(labels[i], row(points, dim, i), tenants[i]);
  HnswIndex hnsw(HnswConfig{dim});
  hnsw.add(labels, TensorView<const float>(points.data(), Shape{n, dim}), tenants);
  for (TenantId t : {1u, 2u, 3u, 4u}) {
    std::size_t foreign = 0;
    const double r = recall(flat, queries, dim, 10, SearchFilter::only_tenant(t), [&](std::span<const float> q) {
      auto found = hnsw.search(q, 10, SearchFilter::only_tenant(t));
      for (const Neighbor& nb : found) foreign += tenants[nb.label] == t ? 0 : 1;
      return found;
    });
    INFO("tenant " << t << " recall " << r);
    CHECK(r >= 0.95);
    CHECK(foreign == 0);
  }
  // 1,000 small tenants (about 8 vectors each), many queries: never a foreign result, and every one of
  // the tenant's vectors up to k.
  std::map<TenantId, std::size_t> held;
  for (TenantId t : tenants) ++held[t];
  std::size_t foreign = 0, results = 0, expected = 0;
  for (std::size_t i = 0; i < 2000; ++i) {
    const TenantId t = 100 + i % 1000;
    expected += std::min<std::size_t>(10, held[t]);
    for (const Neighbor& nb : hnsw.search(row(queries, dim, i % 50), 10, SearchFilter::only_tenant(t))) {
      foreign += tenants[nb.label] == t ? 0 : 1;
      ++results;
    }
  }
  CHECK(foreign == 0);
  CHECK(results == expected);
  CHECK(hnsw.search(row(queries, dim, 0), 10, SearchFilter::only_tenant(999999)).empty());
  // The same tenants through the filtered graph walk (an exact-scan limit below their sizes): at 10%, 1%
  // and 0.1% selectivity the walk, completed by a scan when it finds fewer than k, keeps its recall.
  HnswConfig walking{dim};
  walking.exact_search_limit = 16;
  HnswIndex walked(walking);
  walked.add(labels, TensorView<const float>(points.data(), Shape{n, dim}), tenants);
  for (TenantId t : {2u, 3u, 4u}) {
    std::size_t walk_foreign = 0;
    const double r = recall(flat, queries, dim, 10, SearchFilter::only_tenant(t), [&](std::span<const float> q) {
      auto found = walked.search(q, 10, SearchFilter::only_tenant(t));
      for (const Neighbor& nb : found) walk_foreign += tenants[nb.label] == t ? 0 : 1;
      return found;
    });
    INFO("walked tenant " << t << " (" << held[t] << " vectors) recall " << r);
    CHECK(r >= 0.95);
    CHECK(walk_foreign == 0);
  }
  // A predicate that passes 1% of the labels.
  const double r =
      recall(flat, queries, dim, 10, SearchFilter::all_tenants().where([](VectorLabel l) { return l % 100 == 3; }),
             [&](std::span<const float> q) {
               return hnsw.search(q, 10, SearchFilter::all_tenants().where([](VectorLabel l) { return l % 100 == 3; }));
             });
  INFO("predicate recall " << r);
  CHECK(r >= 0.95);
}

TEST_CASE("Deleted vectors are never returned", "[ann]") {
  const std::size_t dim = 16, n = 3000;
  const std::vector<float> points = make_points(n, dim, 30, 9), queries = make_points(50, dim, 30, 10);
  HnswIndex hnsw(HnswConfig{dim});
  FlatIndex flat(dim);
  for (std::size_t i = 0; i < n; ++i) {
    hnsw.add(i, row(points, dim, i), i % 4);
    flat.add(i, row(points, dim, i), i % 4);
  }
  for (std::size_t i = 0; i < n; i += 3) {
    hnsw.remove(i, i % 4);
    flat.remove(i, i % 4);
  }
  CHECK(hnsw.size() == n - 1000);
  CHECK(hnsw.stats().deleted == 1000);
  CHECK_FALSE(hnsw.contains(0, 0));
  std::size_t deleted_seen = 0;
  const double r = recall(flat, queries, dim, 10, SearchFilter::all_tenants(), [&](std::span<const float> q) {
    auto found = hnsw.search(q, 10, SearchFilter::all_tenants());
    for (const Neighbor& nb : found) deleted_seen += nb.label % 3 == 0 ? 1 : 0;
    return found;
  });
  CHECK(deleted_seen == 0);
  CHECK(r >= 0.95);
  for (const Neighbor& nb : hnsw.search(row(queries, dim, 0), 10, SearchFilter::only_tenant(2)))
    CHECK(nb.label % 3 != 0);
  PERSONA_REQUIRE_ERROR(hnsw.remove(0, 0), not_found, "label 0 is not in the index");
  hnsw.add(0, row(points, dim, 1), 3);  // a deleted label may be added again, by another tenant
  CHECK(hnsw.contains(0, 3));
  CHECK_FALSE(hnsw.contains(0, 0));
}

TEST_CASE("Later inserts reuse deleted slots, updates move vectors, compaction gives memory back", "[ann]") {
  const std::size_t dim = 16, n = 3000;
  const std::vector<float> points = make_points(2 * n, dim, 30, 13), queries = make_points(50, dim, 30, 14);
  for (VectorStorage storage : {VectorStorage::f32, VectorStorage::int8}) {
    INFO("storage " << static_cast<int>(storage));
    HnswConfig config{dim};
    config.storage = storage;
    HnswIndex hnsw(config);
    FlatIndex flat(dim);
    std::vector<TenantId> tenant_of(2 * n);
    for (std::size_t i = 0; i < n; ++i) {
      tenant_of[i] = i % 2;
      hnsw.add(i, row(points, dim, i), tenant_of[i]);
      flat.add(i, row(points, dim, i), tenant_of[i]);
    }
    const std::size_t vector_bytes = hnsw.stats().vector_bytes;
    // Tenant 0 loses a third of its vectors; tenant 1's new ones take their slots.
    for (std::size_t i = 0; i < n; i += 6) {
      hnsw.remove(i, tenant_of[i]);
      flat.remove(i, tenant_of[i]);
    }
    const std::size_t removed = hnsw.stats().deleted;
    CHECK(removed == (n + 5) / 6);
    for (std::size_t i = n; i < n + removed; ++i) {
      tenant_of[i] = 1;
      hnsw.add(i, row(points, dim, i), 1);
      flat.add(i, row(points, dim, i), 1);
    }
    CHECK(hnsw.stats().deleted == 0);
    CHECK(hnsw.stats().vector_bytes == vector_bytes);  // no new slots
    // Updates: 300 vectors move to new places; every third goes to the other tenant, which takes a remove
    // and an add (update never changes a vector's owner, and refuses another tenant's label).
    for (std::size_t j = 0; j < 300; ++j) {
      const VectorLabel label = 1 + 10 * j;
      const auto to = row(points, dim, n + removed + j);
      const TenantId owner = tenant_of[label];
      PERSONA_REQUIRE_ERROR(hnsw.update(label, to, 1 - owner), permission_denied,
                            fmt::format("label {} is not tenant {}'s", label, 1 - owner));
      if (j % 3 == 0) {
        tenant_of[label] = 1 - owner;
        hnsw.remove(label, owner);
        hnsw.add(label, to, tenant_of[label]);
      } else {
        hnsw.update(label, to, owner);
      }
      CHECK(hnsw.contains(label, tenant_of[label]));
      CHECK_FALSE(hnsw.contains(label, 1 - tenant_of[label]));
      flat.remove(label, owner);
      flat.add(label, to, tenant_of[label]);
      const auto found = hnsw.search(to, 1, SearchFilter::only_tenant(tenant_of[label]));
      REQUIRE(found.size() == 1);
      CHECK(found[0].distance <= (storage == VectorStorage::f32 ? 1e-6f : 1e-3f));
    }
    PERSONA_REQUIRE_ERROR(hnsw.update(0, row(points, dim, 0), 0), not_found, "label 0 is not in the index");
    const auto check_against_flat = [&](const HnswIndex& index) {
      // Each label is its owner's alone, through slot reuse, updates, moves and compaction.
      std::size_t owners_differ = 0;
      for (VectorLabel label = 0; label < tenant_of.size(); label = label + 1 == 2 * n ? 1000000 : label + 1) {
        for (TenantId t : {0u, 1u, 2u}) owners_differ += index.contains(label, t) != flat.contains(label, t) ? 1 : 0;
      }
      CHECK(owners_differ == 0);
      for (TenantId t : {0u, 1u}) {
        std::size_t foreign = 0;
        const double r = recall(flat, queries, dim, 10, SearchFilter::only_tenant(t), [&](std::span<const float> q) {
          auto found = index.search(q, 10, SearchFilter::only_tenant(t));
          for (const Neighbor& nb : found) foreign += flat.contains(nb.label, t) ? 0 : 1;
          return found;
        });
        INFO("tenant " << t << " recall " << r);
        CHECK(r >= 0.95);
        CHECK(foreign == 0);
      }
      const double r = recall(flat, queries, dim, 10, SearchFilter::all_tenants(), [&](std::span<const float> q) {
        return index.search(q, 10, SearchFilter::all_tenants());
      });
      INFO("recall " << r);
      CHECK(r >= 0.95);
    };
    check_against_flat(hnsw);
    // Compaction: half of what is left goes, and its memory with it.
    std::size_t live = hnsw.size();
    for (std::size_t i = 0; i < n + removed; ++i) {
      if (i % 2 == 1 && flat.contains(i, tenant_of[i])) {
        hnsw.remove(i, tenant_of[i]);
        flat.remove(i, tenant_of[i]);
        --live;
      }
    }
    const HnswStats before = hnsw.stats();
    hnsw.compact();
    const HnswStats after = hnsw.stats();
    CHECK(after.deleted == 0);
    CHECK(after.vectors == live);
    CHECK(after.vector_bytes == before.vector_bytes / (n)*live);
    CHECK(after.bytes < before.bytes * 3 / 5);
    check_against_flat(hnsw);
    // The compacted index grows again and round-trips.
    for (std::size_t i = 0; i < 100; ++i) {
      const VectorLabel label = 1000000 + i;
      hnsw.add(label, row(points, dim, i), 0);
      flat.add(label, row(points, dim, i), 0);
      tenant_of.resize(label + 1);
      tenant_of[label] = 0;
    }
    check_against_flat(hnsw);
    HnswIndex emptied(config);
    emptied.add(1, row(points, dim, 0), 0);
    emptied.remove(1, 0);
    emptied.compact();
    CHECK(emptied.size() == 0);
    CHECK(emptied.search(row(points, dim, 0), 5, SearchFilter::all_tenants()).empty());
    emptied.add(2, row(points, dim, 1), 0);
    CHECK(emptied.search(row(points, dim, 0), 5, SearchFilter::all_tenants()).size() == 1);
  }
}

TEST_CASE("Distances that overflow never leave results unordered", "[ann]") {
  // Finite vectors whose products overflow: inf - inf is NaN, which would compare false both ways and
  // leave the k best unordered (the fuzzer found it through a damaged index). NaN counts as farthest.
  const float big = 1e38f;
  const std::vector<std::vector<float>> vectors = {{big, big}, {big, -big}, {1, 1}, {-big, big}, {2, -1}};
  const std::vector<float> query = {big, big};
  FlatIndex flat(2, Metric::inner_product);
  HnswConfig config{.dim = 2, .metric = Metric::inner_product, .M = 4};
  HnswIndex hnsw(config);
  for (std::size_t i = 0; i < vectors.size(); ++i) {
    flat.add(i, vectors[i], 0);
    hnsw.add(i, vectors[i], 0);
  }
  for (const auto& found :
       {flat.search(query, 5, SearchFilter::all_tenants()), hnsw.search(query, 5, SearchFilter::all_tenants())}) {
    REQUIRE(found.size() == 5);
    for (std::size_t i = 0; i < found.size(); ++i) {
      CHECK_FALSE(std::isnan(found[i].distance));
      if (i > 0) CHECK(found[i - 1].distance <= found[i].distance);
    }
    CHECK(found[0].label == 0);  // 1 - (2 x 1e76): the nearest by far
  }
}

TEST_CASE("HnswIndex bad input is a clear Error and an empty index costs kilobytes", "[ann]") {
  HnswIndex empty(HnswConfig{128});
  CHECK(empty.stats().bytes < 16 * 1024);
  CHECK(empty.search(std::vector<float>(128, 1.0f), 10, SearchFilter::all_tenants()).empty());
  PERSONA_REQUIRE_ERROR(HnswIndex(HnswConfig{0}), invalid_argument, "dim is 0");
  PERSONA_REQUIRE_ERROR(HnswIndex(HnswConfig{4, Metric::l2, 1}), invalid_argument, "M is 1");
  HnswIndex index(HnswConfig{4});
  index.add(1, std::vector<float>{1, 2, 3, 4}, 0);
  PERSONA_REQUIRE_ERROR(index.add(1, std::vector<float>{1, 2, 3, 4}, 0), invalid_argument, "label 1 is already");
  PERSONA_REQUIRE_ERROR(index.add(2, std::vector<float>{1, 2, 3}, 0), shape_mismatch,
                        "has 3 elements; the index has dim 4");
  PERSONA_REQUIRE_ERROR(index.add(2, std::vector<float>{1, INFINITY, 3, 4}, 0), invalid_argument, "element 1 is inf");
  PERSONA_REQUIRE_ERROR(index.search(std::vector<float>{1, 2, 3, 4}, 0, SearchFilter::all_tenants()), invalid_argument,
                        "k is 0");
  PERSONA_REQUIRE_ERROR(index.search(std::vector<float>{1, 2, NAN, 4}, 1, SearchFilter::all_tenants()),
                        invalid_argument, "query element 2 is nan");
  CHECK(index.search(std::vector<float>{1, 2, 3, 4}, 10, SearchFilter::all_tenants()).size() ==
        1);  // k beyond the size: what exists
}

TEST_CASE("load(save(index)) answers identically, bad files are clear Errors", "[ann]") {
  const std::size_t dim = 24, n = 2000;
  const std::vector<float> points = make_points(n, dim, 20, 11), queries = make_points(50, dim, 20, 12);
  HnswIndex index(HnswConfig{dim, Metric::cosine, 8});
  for (std::size_t i = 0; i < n; ++i) index.add(i * 3, row(points, dim, i), i % 5);
  for (std::size_t i = 0; i < n; i += 7) index.remove(i * 3, i % 5);
  const auto folder = std::filesystem::temp_directory_path() / fmt::format("persona_ann_{}", ::getpid());
  std::filesystem::create_directories(folder);
  const auto path = folder / "index.hnsw";
  index.save(path);
  const HnswIndex loaded = HnswIndex::load(path);
  CHECK(loaded.size() == index.size());
  CHECK(loaded.stats().deleted == index.stats().deleted);
  for (std::size_t i = 0; i < n; ++i) {  // every label keeps its owner through the file
    REQUIRE(loaded.contains(i * 3, i % 5) == (i % 7 != 0));
    REQUIRE_FALSE(loaded.contains(i * 3, (i + 1) % 5));
  }
  CHECK(loaded.config().M == 8);
  CHECK(loaded.config().metric == Metric::cosine);
  for (std::size_t i = 0; i < 50; ++i) {
    const auto q = row(queries, dim, i);
    CHECK(loaded.search(q, 10, SearchFilter::all_tenants()) == index.search(q, 10, SearchFilter::all_tenants()));
    CHECK(loaded.search(q, 10, SearchFilter::only_tenant(i % 5)) ==
          index.search(q, 10, SearchFilter::only_tenant(i % 5)));
    CHECK(loaded.search(q, 5, SearchFilter::all_tenants(), 16) == index.search(q, 5, SearchFilter::all_tenants(), 16));
  }
  const std::vector<std::byte> bytes = read_file(path);
  const auto write = [&](const std::vector<std::byte>& b) {
    const auto bad = folder / "bad.hnsw";
    write_file_atomically(bad, b);
    return bad;
  };
  auto flipped = bytes;
  flipped[bytes.size() / 2] ^= std::byte{1};
  PERSONA_REQUIRE_ERROR(HnswIndex::load(write(flipped)), corrupt_data, "checksum mismatch");
  for (std::size_t keep : {std::size_t{0}, std::size_t{12}, bytes.size() / 3, bytes.size() - 1}) {
    PERSONA_REQUIRE_ERROR(HnswIndex::load(write({bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(keep)})),
                          corrupt_data, "bad.hnsw");
  }
  // Cut inside the upper links behind a recomputed checksum: the reader's own length check refuses it,
  // in the name of load like every other check. (The reader's range includes the checksum, so the cut is
  // 12 bytes: 4 more than the checksum the last list reads into.)
  {
    const std::size_t body = bytes.size() - sizeof(std::uint64_t) - 12;
    std::vector<std::byte> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(body));
    const std::uint64_t sum = file_checksum(cut);
    cut.resize(body + sizeof(sum));
    std::memcpy(cut.data() + body, &sum, sizeof(sum));
    try {
      (void)HnswIndex::load(write(cut));
      FAIL("a truncated file loaded");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::corrupt_data);
      CHECK(e.function() == "load");
      CHECK_THAT(e.message(), Catch::Matchers::Contains("truncated: upper links"));
    }
  }
  // Damage behind a recomputed checksum (anyone can recompute it): every such file loads, or fails as
  // corrupt_data; none crashes a load or a later search.
  std::mt19937 damage(15);
  std::size_t refused = 0;
  for (int trial = 0; trial < 300; ++trial) {
    auto bad = bytes;
    const std::size_t body = bytes.size() - sizeof(std::uint64_t);
    const std::size_t at = trial < 150 ? body - 1 - damage() % (body / 3) : damage() % 128;  // links or header
    bad[at] = static_cast<std::byte>(damage());
    const std::uint64_t sum = file_checksum(std::span<const std::byte>(bad.data(), body));
    std::memcpy(bad.data() + body, &sum, sizeof(sum));
    try {
      const HnswIndex odd = HnswIndex::load(write(bad));
      for (std::size_t i = 0; i < 5; ++i) (void)odd.search(row(queries, dim, i), 10, SearchFilter::all_tenants());
    } catch (const Error& e) {
      refused += e.code() == ErrorCode::corrupt_data || e.code() == ErrorCode::unsupported ? 1 : 0;
      INFO(e.what());
      CHECK((e.code() == ErrorCode::corrupt_data || e.code() == ErrorCode::unsupported));
    }
  }
  CHECK(refused > 0);
  // A non-finite vector element behind a recomputed checksum (found by the fuzzer: NaN distances left the
  // results unordered) is corrupt_data, as add would refuse it.
  {
    // The f32 vectors start at byte 128: the 104-byte header padded to 64 (docs/formats.md).
    constexpr std::size_t kElement1 = 128 + sizeof(float);
    auto bad = bytes;
    const float nan = std::nanf("");
    std::memcpy(bad.data() + kElement1, &nan, sizeof(nan));
    const std::size_t body = bytes.size() - sizeof(std::uint64_t);
    const std::uint64_t sum = file_checksum(std::span<const std::byte>(bad.data(), body));
    std::memcpy(bad.data() + body, &sum, sizeof(sum));
    PERSONA_REQUIRE_ERROR(HnswIndex::load(write(bad)), corrupt_data, "element 1 of vector 0 is nan");
  }
  check_index_versions(bytes, write, [](const std::filesystem::path& p) { return HnswIndex::load(p); });
  PERSONA_REQUIRE_ERROR(HnswIndex::load(folder / "missing.hnsw"), io_error, "missing.hnsw");
  // Mapped: the same answers, the vectors read from the file; writes copy pages and leave the file alone.
  {
    HnswIndex mapped = HnswIndex::load(path, LoadMode::map);
    CHECK(mapped.stats().mapped_bytes == mapped.stats().vector_bytes);
    for (std::size_t i = 0; i < 50; ++i)
      CHECK(mapped.search(row(queries, dim, i), 10, SearchFilter::all_tenants()) ==
            index.search(row(queries, dim, i), 10, SearchFilter::all_tenants()));
    mapped.update(3, row(points, dim, 7), 1);  // label 3 is tenant 1's
    CHECK(mapped.search(row(points, dim, 7), 1, SearchFilter::all_tenants()).at(0).label == 3);
    CHECK(read_file(path) == bytes);
    // Inserts fill the deleted slots in place, then growing copies the vectors out of the file.
    for (std::size_t i = 0; i < 50; ++i) mapped.add(1000000 + i, row(queries, dim, i), 0);
    CHECK(mapped.stats().mapped_bytes == mapped.stats().vector_bytes);
    for (std::size_t i = 0; i < n / 7 + 1; ++i) mapped.add(2000000 + i, row(points, dim, i), 0);
    CHECK(mapped.stats().mapped_bytes == 0);
    for (std::size_t i = 0; i < 50; ++i)
      CHECK(mapped.search(row(queries, dim, i), 1, SearchFilter::all_tenants()).at(0).label == 1000000 + i);
    CHECK(mapped.search(row(points, dim, 7), 1, SearchFilter::all_tenants()).at(0).label == 3);
  }
  // int8 storage round-trips, read and mapped.
  HnswConfig int8_config{dim};
  int8_config.storage = VectorStorage::int8;
  for (bool keep_f32 : {true, false}) {
    int8_config.keep_f32 = keep_f32;
    HnswIndex quantized(int8_config);
    for (std::size_t i = 0; i < 500; ++i) quantized.add(i, row(points, dim, i), i % 3);
    quantized.save(folder / "int8.hnsw");
    for (LoadMode mode : {LoadMode::read, LoadMode::map}) {
      const HnswIndex back = HnswIndex::load(folder / "int8.hnsw", mode);
      CHECK(back.config().storage == VectorStorage::int8);
      CHECK(back.config().keep_f32 == keep_f32);
      for (std::size_t i = 0; i < 20; ++i)
        CHECK(back.search(row(queries, dim, i), 10, SearchFilter::all_tenants()) ==
              quantized.search(row(queries, dim, i), 10, SearchFilter::all_tenants()));
    }
  }
  // An empty index round-trips too.
  HnswIndex empty(HnswConfig{dim});
  empty.save(folder / "empty.hnsw");
  CHECK(HnswIndex::load(folder / "empty.hnsw").size() == 0);
  std::filesystem::remove_all(folder);
}
