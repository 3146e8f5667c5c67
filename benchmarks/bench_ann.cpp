// bench_ann: persona's HnswIndex against hnswlib and FAISS (IndexHNSWFlat, IndexIVFFlat) in the same
// binary, on (a) fashion-mnist-784 (Debian's dataset-fashion-mnist: 60k training images as queries' haystack,
// the first 1,000 test images as queries, L2, as ann-benchmarks) and (b) gmm100k-128 (100 Gaussian centres,
// seeded). k = 10, M = 16, ef_construction = 200; exact ground truth from FlatIndex. Builds run on 2 threads,
// searches one query per call on 1 thread (and on 2 for persona and hnswlib) over an ef (nprobe) grid; the
// summary interpolates QPS at recall 0.95 and 0.99. persona runs with f32 storage and with int8 storage plus
// the exact f32 re-rank ("persona-int8"). Then tenant-filtered search on gmm100k (tenants of 0.9% and one
// of 10%), the bytes of an empty index, and, when PERSONA_ANN_CHART names a file, a recall-vs-QPS chart
// (SVG) of the 1-thread curves.
#include "ann_peers.hpp"
#include "bench_support.hpp"

#include <persona/persona.hpp>

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace persona;
namespace bench = persona::bench;

constexpr std::size_t kK = 10, kM = 16, kEfConstruction = 200, kQueries = 1000;

struct Dataset {
  std::string name;
  std::size_t dim = 0, n = 0;
  std::vector<float> train, queries;  // [n, dim], [kQueries, dim]
  std::vector<TenantId> tenants;      // gmm: 0 holds 10% of the rows, 1..90 0.9% each
  std::vector<std::set<VectorLabel>> truth;
};

std::vector<std::uint8_t> gunzip(const std::string& path) {
  std::vector<std::uint8_t> out;
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) return out;
  std::uint8_t buffer[1 << 16];
  for (int got; (got = gzread(f, buffer, sizeof(buffer))) > 0;) out.insert(out.end(), buffer, buffer + got);
  gzclose(f);
  return out;
}

// IDX images as float pixels (0..255), at most `limit` of them.
std::vector<float> idx_images(const std::string& path, std::size_t limit, std::size_t& dim) {
  const std::vector<std::uint8_t> bytes = gunzip(path);
  if (bytes.size() < 16) return {};
  const auto be32 = [&](std::size_t at) {
    return (std::size_t{bytes[at]} << 24) | (std::size_t{bytes[at + 1]} << 16) | (std::size_t{bytes[at + 2]} << 8) |
           bytes[at + 3];
  };
  const std::size_t count = std::min(be32(4), limit);
  dim = be32(8) * be32(12);
  if (bytes.size() < 16 + count * dim) return {};
  return std::vector<float>(bytes.begin() + 16, bytes.begin() + 16 + static_cast<std::ptrdiff_t>(count * dim));
}

void compute_truth(Dataset& d, const SearchFilter& filter, std::vector<std::set<VectorLabel>>& truth,
                   const std::vector<TenantId>* query_tenants = nullptr) {
  FlatIndex flat(d.dim);
  for (std::size_t i = 0; i < d.n; ++i) {
    flat.add(i, {d.train.data() + i * d.dim, d.dim}, d.tenants.empty() ? 0 : d.tenants[i]);
  }
  truth.assign(kQueries, {});
  parallel_for(kQueries, 16, [&](std::size_t begin, std::size_t end) {
    for (std::size_t q = begin; q < end; ++q) {
      const SearchFilter f = query_tenants ? SearchFilter::only_tenant((*query_tenants)[q]) : filter;
      for (const Neighbor& nb : flat.search({d.queries.data() + q * d.dim, d.dim}, kK, f)) truth[q].insert(nb.label);
    }
  });
}

Dataset* dataset(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Dataset>> cache;
  if (auto it = cache.find(name); it != cache.end()) return it->second.get();
  auto d = std::make_unique<Dataset>();
  d->name = name;
  if (name == "fashion-mnist") {
    const char* dir = std::getenv("PERSONA_FASHION_MNIST_DIR");
    const std::string base = dir ? dir : "/usr/share/datasets/fashion-mnist";
    std::size_t test_dim = 0;
    d->train = idx_images(base + "/train-images-idx3-ubyte.gz", 60000, d->dim);
    d->queries = idx_images(base + "/t10k-images-idx3-ubyte.gz", kQueries, test_dim);
    if (d->train.empty() || d->queries.size() != kQueries * d->dim) {
      fmt::print(stderr, "bench_ann: fashion-mnist not found in {} (apt-get install dataset-fashion-mnist): skipped\n",
                 base);
      cache[name] = nullptr;
      return nullptr;
    }
    d->n = d->train.size() / d->dim;
  } else {  // gmm100k-128
    d->dim = 128;
    d->n = 100000;
    std::mt19937 rng(42);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    std::normal_distribution<float> spread(0.0f, 0.15f);
    std::vector<float> centres(100 * d->dim);
    for (float& c : centres) c = uniform(rng);
    const auto draw = [&](std::size_t count) {
      std::vector<float> out(count * d->dim);
      for (std::size_t i = 0; i < count; ++i) {
        const std::size_t c = rng() % 100;
        for (std::size_t j = 0; j < d->dim; ++j) out[i * d->dim + j] = centres[c * d->dim + j] + spread(rng);
      }
      return out;
    };
    d->train = draw(d->n);
    d->queries = draw(kQueries);
    d->tenants.resize(d->n);
    for (std::size_t i = 0; i < d->n; ++i) d->tenants[i] = i % 10 == 0 ? 0 : 1 + i % 90;
  }
  compute_truth(*d, SearchFilter::all_tenants(), d->truth);
  return (cache[name] = std::move(d)).get();
}

// The indexes the build cases make, for the search cases that follow them.
struct Built {
  std::unique_ptr<HnswIndex> persona;
  std::unique_ptr<bench::PeerIndex> peer;
};
std::map<std::string, Built>& built() {
  static std::map<std::string, Built> all;
  return all;
}

std::unique_ptr<bench::PeerIndex> make_peer(const std::string& library, const Dataset& d) {
  // hnswlib's file is built with AVX2 (its own SIMD switches are compile-time).
  if (library == "hnswlib") {
    return __builtin_cpu_supports("avx2") ? bench::make_hnswlib(d.dim, d.n, kM, kEfConstruction) : nullptr;
  }
  if (library == "faiss_hnsw") return bench::make_faiss_hnsw(d.dim, kM, kEfConstruction);
  if (library == "faiss_ivf") return bench::make_faiss_ivf(d.dim, static_cast<std::size_t>(std::sqrt(d.n)));
  return nullptr;
}

void run_build(benchmark::State& state, const std::string& library, const std::string& name) {
  Dataset* d = dataset(name);
  if (d == nullptr) return state.SkipWithError("dataset missing");
  Built& b = built()[library + "/" + name];
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    if (library.starts_with("persona")) {
      ScopedNumThreads threads(2);
      HnswConfig config{d->dim, Metric::l2, kM, kEfConstruction};
      if (library == "persona-int8") config.storage = VectorStorage::int8;
      b.persona = std::make_unique<HnswIndex>(config);
      std::vector<VectorLabel> labels(d->n);
      for (std::size_t i = 0; i < d->n; ++i) labels[i] = i;
      const TensorView<const float> rows(d->train.data(), Shape{d->n, d->dim});
      if (d->tenants.empty()) {
        b.persona->add(labels, rows, 0);
      } else {
        b.persona->add(labels, rows, d->tenants);
      }
    } else {
      b.peer = make_peer(library, *d);
      if (!b.peer) return state.SkipWithError("library missing");
      b.peer->build(d->train.data(), d->n, 2);
    }
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  state.counters["bytes"] = static_cast<double>(b.persona ? b.persona->stats().bytes : b.peer->memory_bytes());
}

double recall_of(const std::vector<std::vector<VectorLabel>>& found, const std::vector<std::set<VectorLabel>>& truth) {
  double total = 0.0;
  for (std::size_t q = 0; q < found.size(); ++q) {
    std::size_t hits = 0;
    for (VectorLabel l : found[q]) hits += truth[q].count(l);
    total += truth[q].empty() ? 1.0 : static_cast<double>(hits) / static_cast<double>(truth[q].size());
  }
  return total / static_cast<double>(found.size());
}

void run_search(benchmark::State& state, const std::string& library, const std::string& name, std::size_t breadth,
                int filter_kind, std::size_t threads = 1) {
  ScopedNumThreads one(1);
  Dataset* d = dataset(name);
  if (d == nullptr) return state.SkipWithError("dataset missing");
  Built& b = built()[library + "/" + name];
  if (!b.persona && !b.peer) return state.SkipWithError("index not built");
  // filter_kind 1: each query for tenant 1 + q % 90 (0.9% of the rows); 2: tenant 0 (10%).
  static std::map<int, std::vector<std::set<VectorLabel>>> filtered_truth;
  std::vector<TenantId> query_tenants(kQueries);
  for (std::size_t q = 0; q < kQueries; ++q) query_tenants[q] = filter_kind == 1 ? 1 + q % 90 : 0;
  if (filter_kind != 0 && !filtered_truth.contains(filter_kind)) {
    compute_truth(*d, SearchFilter::all_tenants(), filtered_truth[filter_kind], &query_tenants);
  }
  const auto& truth = filter_kind == 0 ? d->truth : filtered_truth[filter_kind];
  std::vector<std::vector<VectorLabel>> found(kQueries, std::vector<VectorLabel>(kK));
  std::vector<std::size_t> foreign(threads, 0);
  if (b.peer) b.peer->set_breadth(breadth);
  // Queries q = part, part + threads, ... on thread `part`.
  const auto run_part = [&](std::size_t part) {
    std::vector<std::int64_t> ids(kK);
    for (std::size_t q = part; q < kQueries; q += threads) {
      const float* query = d->queries.data() + q * d->dim;
      if (b.persona) {
        const SearchFilter filter =
            filter_kind != 0 ? SearchFilter::only_tenant(query_tenants[q]) : SearchFilter::all_tenants();
        const auto result = b.persona->search({query, d->dim}, kK, filter, breadth);
        found[q].clear();
        for (const Neighbor& nb : result) {
          found[q].push_back(nb.label);
          if (filter_kind != 0) foreign[part] += d->tenants[nb.label] == query_tenants[q] ? 0 : 1;
        }
      } else {
        b.peer->search(query, kK, ids.data());
        for (std::size_t i = 0; i < kK; ++i) found[q][i] = static_cast<VectorLabel>(ids[i]);
      }
    }
  };
  bench::timed(state, [&] {
    if (threads == 1) return run_part(0);
    std::vector<std::thread> workers;
    for (std::size_t part = 0; part < threads; ++part) workers.emplace_back(run_part, part);
    for (std::thread& w : workers) w.join();
  });
  state.counters["recall"] = recall_of(found, truth);
  state.counters["foreign"] = static_cast<double>(std::accumulate(foreign.begin(), foreign.end(), std::size_t{0}));
  state.counters["qps"] =
      benchmark::Counter(static_cast<double>(kQueries), benchmark::Counter::kIsIterationInvariantRate);
}

const std::vector<std::size_t> kEfGrid{10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512};
const std::vector<std::size_t> kProbeGrid{1, 2, 4, 8, 16, 32, 64, 128};
const std::vector<std::string> kLibraries{"persona", "persona-int8", "hnswlib", "faiss_hnsw", "faiss_ivf"};
// Searched on 2 threads too, over the part of the grid around recall 0.95 and 0.99.
const std::vector<std::string> kTwoThreadLibraries{"persona", "persona-int8", "hnswlib"};
const std::vector<std::size_t> kTwoThreadGrid{10, 16, 24, 32, 48};
const std::vector<std::string> kDatasets{"fashion-mnist", "gmm100k"};

std::string search_name(const std::string& library, const std::string& name, std::size_t breadth, int filter,
                        std::size_t threads = 1) {
  return fmt::format("search/{}/{}/{}{}{}", library, name,
                     filter == 0   ? ""
                     : filter == 1 ? "tenant0.9%/"
                                   : "tenant10%/",
                     breadth, threads == 1 ? "" : "/threads:2");
}

void register_benchmarks() {
  for (const std::string& name : kDatasets) {
    for (const std::string& library : kLibraries) {
      benchmark::RegisterBenchmark(fmt::format("build/{}/{}/threads:2", library, name).c_str(),
                                   [library, name](benchmark::State& s) { run_build(s, library, name); })
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond)
          ->Iterations(1)
          ->Repetitions(1);
      for (std::size_t breadth : library == "faiss_ivf" ? kProbeGrid : kEfGrid) {
        bench::add_case(search_name(library, name, breadth, 0),
                        [library, name, breadth](benchmark::State& s) { run_search(s, library, name, breadth, 0); });
      }
    }
    for (const std::string& library : kTwoThreadLibraries) {
      for (std::size_t ef : kTwoThreadGrid) {
        bench::add_case(search_name(library, name, ef, 0, 2),
                        [library, name, ef](benchmark::State& s) { run_search(s, library, name, ef, 0, 2); });
      }
    }
  }
  for (int filter : {1, 2}) {
    for (std::size_t ef : kEfGrid) {
      bench::add_case(search_name("persona", "gmm100k", ef, filter),
                      [ef, filter](benchmark::State& s) { run_search(s, "persona", "gmm100k", ef, filter); });
    }
  }
}

// QPS where the recall curve (breadth ascending) crosses `target`, linearly between grid points; 0 if never.
double qps_at(const std::map<std::string, bench::Measurement>& results, const std::string& library,
              const std::string& name, double target, int filter = 0, std::size_t threads = 1) {
  double last_recall = 0.0, last_qps = 0.0;
  for (std::size_t breadth : library == "faiss_ivf" ? kProbeGrid : threads == 1 ? kEfGrid : kTwoThreadGrid) {
    const auto* m = bench::find_result(results, search_name(library, name, breadth, filter, threads));
    if (m == nullptr || !m->median_counters.contains("recall")) continue;
    const double recall = m->median_counters.at("recall"), qps = m->median_counters.at("qps");
    if (recall >= target) {
      if (last_qps == 0.0 || recall == last_recall) return qps;
      return last_qps + (qps - last_qps) * (target - last_recall) / (recall - last_recall);
    }
    last_recall = recall;
    last_qps = qps;
  }
  return 0.0;
}

// The 1-thread recall-vs-QPS curves of every library, one panel per dataset, as an SVG file.
void write_chart(const std::map<std::string, bench::Measurement>& results, const std::string& path) {
  constexpr double kWidth = 460, kHeight = 340, kLeft = 60, kTop = 30, kPlotW = 380, kPlotH = 250;
  constexpr double kRecallLow = 0.90, kQpsLow = 100, kQpsHigh = 100000;  // log scale on QPS
  const std::map<std::string, std::string> colours{{"persona", "#d62728"},
                                                   {"persona-int8", "#ff7f0e"},
                                                   {"hnswlib", "#1f77b4"},
                                                   {"faiss_hnsw", "#2ca02c"},
                                                   {"faiss_ivf", "#9467bd"}};
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" "
      "font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      kWidth * static_cast<double>(kDatasets.size()), kHeight + 40);
  for (std::size_t panel = 0; panel < kDatasets.size(); ++panel) {
    const std::string& name = kDatasets[panel];
    const double x0 = static_cast<double>(panel) * kWidth + kLeft;
    const auto x = [&](double recall) { return x0 + (recall - kRecallLow) / (1.0 - kRecallLow) * kPlotW; };
    const auto y = [&](double qps) {
      const double f = (std::log10(std::clamp(qps, kQpsLow, kQpsHigh)) - std::log10(kQpsLow)) /
                       (std::log10(kQpsHigh) - std::log10(kQpsLow));
      return kTop + (1.0 - f) * kPlotH;
    };
    svg += fmt::format("<text x=\"{}\" y=\"18\" font-size=\"13\">{}: recall@10 vs QPS (1 thread)</text>\n", x0, name);
    svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"black\"/>\n", x0,
                       kTop, kPlotW, kPlotH);
    for (double r = kRecallLow; r <= 1.0001; r += 0.02) {
      svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{:.2f}</text>\n", x(r), kTop + kPlotH + 14,
                         r);
    }
    for (double q = kQpsLow; q <= kQpsHigh; q *= 10) {
      svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{:.0f}</text>\n", x0 - 4, y(q) + 4, q);
      svg += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>\n", x0, x0 + kPlotW,
                         y(q), y(q));
    }
    svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">recall@10</text>\n", x0 + kPlotW / 2,
                       kTop + kPlotH + 30);
    std::size_t legend = 0;
    for (const std::string& library : kLibraries) {
      std::string points;
      for (std::size_t breadth : library == "faiss_ivf" ? kProbeGrid : kEfGrid) {
        const auto* m = bench::find_result(results, search_name(library, name, breadth, 0));
        if (m == nullptr || !m->median_counters.contains("recall")) continue;
        const double recall = m->median_counters.at("recall");
        if (recall < kRecallLow) continue;
        points += fmt::format("{:.1f},{:.1f} ", x(recall), y(m->median_counters.at("qps")));
      }
      if (points.empty()) continue;
      const std::string& colour = colours.at(library);
      svg += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>\n", points, colour);
      svg += fmt::format("<text x=\"{}\" y=\"{}\" fill=\"{}\">{}</text>\n", x0 + 8,
                         kTop + 16 + 14 * static_cast<double>(legend++), colour, library);
    }
  }
  svg += "</svg>\n";
  if (std::FILE* f = std::fopen(path.c_str(), "w")) {
    std::fputs(svg.c_str(), f);
    std::fclose(f);
    fmt::print("\nbench_ann: wrote the recall-vs-QPS chart to {}\n", path);
  }
}

void print_summary(const std::map<std::string, bench::Measurement>& results) {
  if (const char* chart = std::getenv("PERSONA_ANN_CHART")) write_chart(results, chart);
  if (const std::string missing = bench::missing_peers(); !missing.empty()) {
    fmt::print("\nbench_ann: not compared (not found at configure time): {}\n", missing);
  }
  for (const std::string& name : kDatasets) {
    fmt::print("\n## bench_ann: {} (k = {}, M = {}, ef_construction = {}; search 1 thread, build 2)\n\n", name, kK, kM,
               kEfConstruction);
    fmt::print(
        "| library | build | index MiB | QPS @ recall 0.95 | x hnswlib | QPS @ 0.99 | x hnswlib | QPS @ 0.95, 2 "
        "threads | x hnswlib |\n|---|---|---|---|---|---|---|---|---|\n");
    const double h95 = qps_at(results, "hnswlib", name, 0.95), h99 = qps_at(results, "hnswlib", name, 0.99);
    const double h95_2 = qps_at(results, "hnswlib", name, 0.95, 0, 2);
    const auto ratio = [](double a, double b) { return b > 0 && a > 0 ? fmt::format("{:.2f}", a / b) : std::string(); };
    for (const std::string& library : kLibraries) {
      const auto* b = bench::find_result(results, fmt::format("build/{}/{}/threads:2", library, name));
      if (b == nullptr || !b->median_counters.contains("bytes")) continue;
      const double q95 = qps_at(results, library, name, 0.95), q99 = qps_at(results, library, name, 0.99);
      const double q95_2 = qps_at(results, library, name, 0.95, 0, 2);
      fmt::print("| {} | {} | {:.1f} | {:.0f} | {} | {:.0f} | {} | {} | {} |\n", library,
                 bench::format_time(b->median_seconds), b->median_counters.at("bytes") / (1 << 20), q95,
                 ratio(q95, h95), q99, ratio(q99, h99), q95_2 > 0 ? fmt::format("{:.0f}", q95_2) : "",
                 ratio(q95_2, h95_2));
    }
    fmt::print("\n| case | recall | QPS |\n|---|---|---|\n");
    for (const std::string& library : {std::string("persona"), std::string("persona-int8"), std::string("hnswlib")}) {
      for (std::size_t ef : kEfGrid) {
        const auto* m = bench::find_result(results, search_name(library, name, ef, 0));
        if (m == nullptr || !m->median_counters.contains("recall")) continue;
        fmt::print("| {} | {:.4f} | {:.0f} |\n", search_name(library, name, ef, 0), m->median_counters.at("recall"),
                   m->median_counters.at("qps"));
      }
    }
  }
  fmt::print(
      "\n## bench_ann: tenant-filtered search on gmm100k (persona, 1 thread)\n\n| case | recall | QPS | foreign "
      "results |\n|---|---|---|---|\n");
  for (int filter : {1, 2}) {
    for (std::size_t ef : kEfGrid) {
      const auto* m = bench::find_result(results, search_name("persona", "gmm100k", ef, filter));
      if (m == nullptr || !m->median_counters.contains("recall")) continue;
      fmt::print("| {} | {:.4f} | {:.0f} | {:.0f} |\n", search_name("persona", "gmm100k", ef, filter),
                 m->median_counters.at("recall"), m->median_counters.at("qps"), m->median_counters.at("foreign"));
    }
  }
  const HnswIndex empty(HnswConfig{128});
  fmt::print("\nEmpty index, dim 128: persona {} bytes, hnswlib {} bytes\n", empty.stats().bytes,
             __builtin_cpu_supports("avx2") ? bench::hnswlib_empty_bytes(128, kM) : 0);
  fmt::print("\nTargets (1 thread, medians):\n");
  for (const std::string& name : kDatasets) {
    const double p95 = qps_at(results, "persona", name, 0.95), h95 = qps_at(results, "hnswlib", name, 0.95);
    const double p99 = qps_at(results, "persona", name, 0.99), h99 = qps_at(results, "hnswlib", name, 0.99);
    if (h95 > 0)
      fmt::print("- {} QPS at recall 0.95 >= 1.0x hnswlib: {:.2f}x — {}\n", name, p95 / h95,
                 p95 >= h95 ? "MET" : "NOT MET");
    if (h99 > 0)
      fmt::print("- {} QPS at recall 0.99 >= 0.9x hnswlib: {:.2f}x — {}\n", name, p99 / h99,
                 p99 >= 0.9 * h99 ? "MET" : "NOT MET");
    const double i95 = qps_at(results, "persona-int8", name, 0.95);
    if (h95 > 0 && i95 > 0)
      fmt::print("- {} int8 + re-rank QPS at recall 0.95 >= 1.3x hnswlib: {:.2f}x — {}\n", name, i95 / h95,
                 i95 >= 1.3 * h95 ? "MET" : "NOT MET");
    const auto* pb = bench::find_result(results, fmt::format("build/persona/{}/threads:2", name));
    const auto* hb = bench::find_result(results, fmt::format("build/hnswlib/{}/threads:2", name));
    if (pb && hb && hb->median_counters.contains("bytes") && pb->median_counters.contains("bytes")) {
      const double t = pb->median_seconds / hb->median_seconds;
      const double mem = pb->median_counters.at("bytes") / hb->median_counters.at("bytes");
      fmt::print("- {} build time (2 threads) <= 1.25x hnswlib: {:.2f}x — {}\n", name, t,
                 t <= 1.25 ? "MET" : "NOT MET");
      fmt::print("- {} index memory <= 1.1x hnswlib: {:.2f}x — {}\n", name, mem, mem <= 1.1 ? "MET" : "NOT MET");
    }
  }
  const double h95 = qps_at(results, "hnswlib", "gmm100k", 0.95);
  const double f1 = qps_at(results, "persona", "gmm100k", 0.95, 1), f2 = qps_at(results, "persona", "gmm100k", 0.95, 2);
  const double unfiltered = qps_at(results, "persona", "gmm100k", 0.95);
  if (h95 > 0) {
    fmt::print("- tenant 0.9%: QPS at recall 0.95 >= hnswlib's unfiltered: {:.2f}x — {}\n", f1 / h95,
               f1 >= h95 ? "MET" : "NOT MET");
  }
  if (unfiltered > 0) {
    fmt::print("- tenant 10%: QPS at recall 0.95 >= 0.5x unfiltered: {:.2f}x — {}\n", f2 / unfiltered,
               f2 >= 0.5 * unfiltered ? "MET" : "NOT MET");
  }
}

}  // namespace

int main(int argc, char** argv) {
  return bench::run_benchmarks(
      argc, argv,
      {"--benchmark_repetitions=3", "--benchmark_min_time=0.01", "--benchmark_display_aggregates_only=true"},
      register_benchmarks, print_summary);
}
