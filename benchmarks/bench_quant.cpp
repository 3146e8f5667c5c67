// Benchmarks of persona::quantized_matmul on cold weights: the decoder's and LoRA's weight shapes in each
// format, on both activation paths, int4 at every SIMD level, next to f32 Eigen, persona::matmul and a
// memory-read probe from the same run. After the console output it prints a markdown table of times,
// bandwidth, GFLOP/s and speed-ups, then the performance targets evaluated on this run.
//
// Full run (about 2.5 minutes; all flags are Google Benchmark's, these are the defaults):
//   bench_quant --benchmark_repetitions=12 --benchmark_min_time=0.05
// Names read `format/path/level/MxNxK[/threads:2]`, `f32_eigen/MxNxK`, `f32_matmul/level/MxNxK[/threads:2]`
// and `read/NxK` (the probe run before that shape), each followed by "/manual_time", so anchor a filter at
// the start only, e.g. --benchmark_filter='^(read|int4_g32/int8_act/avx512_vnni)/(1x)?4096x4096/'.
// About 600 lines in one file on purpose: the summary table and the targets at the end read the results of
// every case registered above them.
#include "bench_support.hpp"
#include "persona/core/cpu_features.hpp"
#include "persona/core/dtype.hpp"
#include "persona/core/ops.hpp"
#include "persona/core/tensor.hpp"
#include "persona/core/threading.hpp"
#include "persona/quant/quant_spec.hpp"
#include "persona/quant/quantize.hpp"
#include "persona/quant/quantized_matmul.hpp"
#include "persona/quant/quantized_matrix.hpp"

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using persona::IsaLevel;
using persona::QuantizedMatrix;
using persona::QuantProductPath;
using persona::QuantSpec;
using persona::Tensor;
using persona::TensorView;
using persona::bench::format_time;
using persona::bench::last_level_cache_bytes;
using persona::bench::Measurement;

constexpr std::size_t kMebi = std::size_t{1} << 20;
constexpr std::array<std::size_t, 4> kTokenCounts{1, 8, 16, 32};  // decode; small batches of tokens
constexpr std::size_t kMaxTokens = 32;
constexpr int kMoreThreads = 2;
// Weight copies a case rotates over: quantized ones fill at least kCacheMultiple times the LLC, so each
// product streams its weights from memory, as a decoder walking its layers does. f32 copies fill as much
// while that fits kF32Budget, and never less than kF32MinCacheMultiple times the LLC.
constexpr std::size_t kCacheMultiple = 8;
constexpr std::size_t kF32MinCacheMultiple = 2;
constexpr std::size_t kF32Budget = std::size_t{1536} * kMebi;
constexpr int kScalarRepetitions = 3;  // the scalar kernels are slow: fewer samples

// W is [n, k]: n output features, k inputs (the torch.nn.Linear layout).
struct WeightShape {
  std::size_t n, k;
  std::string_view role;
  bool more_threads;  // also run on kMoreThreads threads
  bool every_level;   // also run int4 at every SIMD level
};

// Llama-7B's projections, then LoRA's two factors. LoRA B is rank 32, not 16: a [4096, 16] matrix cannot
// be quantized, since the smallest group size (32) spans k = rank columns.
constexpr std::array<WeightShape, 5> kShapes{{
    {4096, 4096, "attention projection", true, true},
    {11008, 4096, "MLP gate / up", false, false},
    {4096, 11008, "MLP down", false, false},
    {16, 4096, "LoRA A, rank 16", false, false},
    {4096, 32, "LoRA B, rank 32", false, false},
}};

struct Format {
  std::string_view name;
  QuantSpec spec;
  bool both_paths;  // f32_activations as well as int8_activations
};

const std::vector<Format>& formats() {
  static const std::vector<Format> list{
      {"int4_g32", QuantSpec{4, 32, true, persona::DType::f16, persona::QuantCodebook::linear}, true},
      {"int8_g32", QuantSpec{8, 32, true, persona::DType::f16, persona::QuantCodebook::linear}, false},
      {"int2_g32", QuantSpec{2, 32, true, persona::DType::f16, persona::QuantCodebook::linear}, false},
      {"nf4_g64", QuantSpec::nf4(64), false},
  };
  return list;
}

std::string_view path_name(QuantProductPath path) {
  return path == QuantProductPath::int8_activations ? "int8_act" : "f32_act";
}

std::string shape_label(const WeightShape& s) { return fmt::format("{}x{}", s.n, s.k); }
std::string size_label(std::size_t m, const WeightShape& s) { return fmt::format("{}x{}x{}", m, s.n, s.k); }
IsaLevel best_level() { return persona::supported_isa_levels().back(); }

// ---- Inputs ----

Tensor<float> random_normal(persona::Shape shape, std::uint32_t seed) {
  Tensor<float> t(shape);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& v : t.span()) v = normal(rng);
  return t;
}

// The f32 weights of one shape, which its quantized formats and f32 baselines all start from. Only the
// latest shape's are kept (up to 172 MiB).
const Tensor<float>& source_weights(const WeightShape& s) {
  static std::string key;
  static Tensor<float> weights;
  if (key != shape_label(s)) {
    weights = Tensor<float>();
    weights = random_normal({s.n, s.k}, 1);
    key = shape_label(s);
  }
  return weights;
}

// The first m rows of a [kMaxTokens, cols] tensor.
template <class T>
TensorView<T> first_rows(Tensor<T>& t, std::size_t m) {
  return TensorView<T>(t.data(), persona::Shape{m, t.dim(1)});
}

std::size_t copies_for(std::size_t bytes_each, std::size_t total) {
  return std::max<std::size_t>(1, (total + bytes_each - 1) / bytes_each);
}

// What the notes say about each problem's copies, in the order they were built.
std::vector<std::string>& copy_notes() {
  static std::vector<std::string> notes;
  return notes;
}
void note_copies(std::string note) {
  if (std::find(copy_notes().begin(), copy_notes().end(), note) == copy_notes().end()) {
    copy_notes().push_back(std::move(note));
  }
}
std::string copies_description(std::size_t count, std::size_t bytes_each) {
  const double total = static_cast<double>(count * bytes_each);
  return fmt::format("{} copies of {:.2f} MiB = {:.0f} MiB, {:.1f}x the LLC", count,
                     static_cast<double>(bytes_each) / static_cast<double>(kMebi), total / static_cast<double>(kMebi),
                     total / static_cast<double>(last_level_cache_bytes()));
}

// ---- Problems ----
// A problem owns the weight copies of one shape (and format) and activations for up to kMaxTokens tokens;
// each call takes the next copy. bytes(m) is what one product must move: the weights as stored, the
// activations x [m, k] and the output y [m, n], f32.

struct QuantProblem {
  std::vector<QuantizedMatrix> copies;
  Tensor<float> x, y;  // [kMaxTokens, k], [kMaxTokens, n]
  std::size_t next = 0;

  QuantProblem(const WeightShape& s, const Format& format)
      : x(random_normal({kMaxTokens, s.k}, 2)), y(persona::Shape{kMaxTokens, s.n}) {
    const QuantizedMatrix q = persona::quantize(source_weights(s).view(), format.spec);
    const std::size_t count = copies_for(q.bytes(), kCacheMultiple * last_level_cache_bytes());
    copies.assign(count, q);
    note_copies(fmt::format("{} {} ({}): {}", shape_label(s), format.name, format.spec.to_string(),
                            copies_description(count, q.bytes())));
  }
  void run(std::size_t m, QuantProductPath path) {
    const QuantizedMatrix& w = copies[next];
    next = (next + 1) % copies.size();
    persona::quantized_matmul(first_rows(x, m), w, first_rows(y, m), path);
  }
  double bytes(std::size_t m) const {
    return static_cast<double>(copies[0].bytes() + m * (x.dim(1) + y.dim(1)) * sizeof(float));
  }
};

using RowMajorMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

Eigen::Index eigen_size(std::size_t n) { return static_cast<Eigen::Index>(n); }

struct F32Problem {
  std::vector<Tensor<float>> copies;  // [n, k] row-major, each
  Tensor<float> x, y;                 // [kMaxTokens, k], [kMaxTokens, n]
  std::size_t next = 0;

  explicit F32Problem(const WeightShape& s)
      : x(random_normal({kMaxTokens, s.k}, 2)), y(persona::Shape{kMaxTokens, s.n}) {
    const Tensor<float>& w = source_weights(s);
    const std::size_t bytes_each = w.numel() * sizeof(float), llc = last_level_cache_bytes();
    const std::size_t count = std::max(
        std::min(copies_for(bytes_each, kCacheMultiple * llc), std::max<std::size_t>(1, kF32Budget / bytes_each)),
        copies_for(bytes_each, kF32MinCacheMultiple * llc));
    copies.assign(count, w);
    note_copies(fmt::format("{} f32: {}", shape_label(s), copies_description(count, bytes_each)));
  }
  const Tensor<float>& next_weights() {
    const Tensor<float>& w = copies[next];
    next = (next + 1) % copies.size();
    return w;
  }
  // c.noalias() = x * W^T on row-major maps, in Eigen as this file is compiled (no -march: SSE2).
  void run_eigen(std::size_t m) {
    const Tensor<float>& w = next_weights();
    const Eigen::Index rows = eigen_size(m), n = eigen_size(w.dim(0)), k = eigen_size(w.dim(1));
    Eigen::Map<RowMajorMatrix>(y.data(), rows, n).noalias() =
        Eigen::Map<const RowMajorMatrix>(x.data(), rows, k) *
        Eigen::Map<const RowMajorMatrix>(w.data(), n, k).transpose();
  }
  // persona's f32 linear layer: Eigen's GEMM compiled for the active level, tiled over threads.
  void run_matmul(std::size_t m) {
    persona::matmul(first_rows(x, m), next_weights().view(), first_rows(y, m), persona::Transpose::yes);
  }
  double bytes(std::size_t m) const {
    return static_cast<double>((copies[0].numel() + m * (x.dim(1) + y.dim(1))) * sizeof(float));
  }
};

// The read probe: one pass sums an array of kCacheMultiple times the LLC (128 MiB at least).
std::size_t read_probe_bytes() { return std::max(kCacheMultiple * last_level_cache_bytes(), std::size_t{128} * kMebi); }

struct ReadProblem {
  persona::bench::Stream stream{persona::bench::StreamKernel::read, read_probe_bytes() / sizeof(float)};
  double bytes() const { return static_cast<double>(stream.bytes()); }
};

// The one problem alive. Cases run grouped by problem, so each is built once, and its copies (up to
// ~1.5 GiB) are freed before the next one is built.
class CurrentProblem {
 public:
  template <class Problem, class... Args>
  Problem& get(const std::string& key, const Args&... args) {
    if (key != key_) {
      problem_.reset();
      key_.clear();
      problem_ = std::make_shared<Problem>(args...);
      key_ = key;
    }
    return *static_cast<Problem*>(problem_.get());
  }

 private:
  std::string key_;
  std::shared_ptr<void> problem_;
};

CurrentProblem& current_problem() {
  static CurrentProblem problem;
  return problem;
}

// ---- Registration ----

enum class CaseKind { read, eigen, matmul, quant };

// One registered benchmark, as the summary describes it.
struct CaseInfo {
  CaseKind kind = CaseKind::quant;
  std::size_t shape = 0;  // index into kShapes: the shape, or for `read` the group it runs before
  std::size_t m = 0;
  std::size_t format = 0;  // index into formats(), quant only
  QuantProductPath path = QuantProductPath::int8_activations;
  std::optional<IsaLevel> level = std::nullopt;  // forced level; none for read and Eigen
  int threads = 1;
};

// "format/path/level/mxnxk", "f32_eigen/mxnxk", "f32_matmul/level/mxnxk", "read/nxk", with "/threads:2"
// on more threads: a filter like '/1x4096x4096' picks every case of one size.
std::string benchmark_name(const CaseInfo& c) {
  const WeightShape& s = kShapes[c.shape];
  std::string name;
  switch (c.kind) {
    case CaseKind::read: name = fmt::format("read/{}", shape_label(s)); break;
    case CaseKind::eigen: name = fmt::format("f32_eigen/{}", size_label(c.m, s)); break;
    case CaseKind::matmul:
      name = fmt::format("f32_matmul/{}/{}", persona::to_string(*c.level), size_label(c.m, s));
      break;
    case CaseKind::quant:
      name = fmt::format("{}/{}/{}/{}", formats()[c.format].name, path_name(c.path), persona::to_string(*c.level),
                         size_label(c.m, s));
      break;
  }
  if (c.threads > 1) name += fmt::format("/threads:{}", c.threads);
  return name;
}

std::vector<CaseInfo>& registered_cases() {
  static std::vector<CaseInfo> cases;
  return cases;
}

// Bytes one call moves, by benchmark name, recorded when the case runs.
std::map<std::string, double>& bytes_per_call() {
  static std::map<std::string, double> bytes;
  return bytes;
}

// One call per iteration, timed on its own (the library's time is then the mean of the calls); the
// counters p50 and best are the median and the minimum over this run's calls, in seconds.
template <class Call>
void time_each_call(benchmark::State& state, double bytes, Call call) {
  using Clock = std::chrono::steady_clock;
  std::vector<double> samples;
  samples.reserve(static_cast<std::size_t>(std::min<benchmark::IterationCount>(state.max_iterations, 1 << 20)));
  for ([[maybe_unused]] auto _ : state) {
    const Clock::time_point start = Clock::now();
    call();
    benchmark::ClobberMemory();
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    state.SetIterationTime(seconds);
    samples.push_back(seconds);
  }
  if (samples.empty()) return;
  const auto middle = samples.begin() + static_cast<std::ptrdiff_t>(samples.size() / 2);
  std::nth_element(samples.begin(), middle, samples.end());
  state.counters["p50"] = *middle;
  state.counters["best"] = *std::min_element(samples.begin(), samples.end());
  state.SetBytesProcessed(static_cast<std::int64_t>(static_cast<double>(state.iterations()) * bytes));
}

// `repetitions`: what the command line asked for; kScalarRepetitions caps it for scalar cases.
void add_case(const CaseInfo& info, int repetitions) {
  const std::string name = benchmark_name(info);
  auto body = [info, name](benchmark::State& state) {
    std::optional<persona::ScopedIsaLevel> isa;
    if (info.level) isa.emplace(*info.level);
    persona::ScopedNumThreads thread_limit(info.threads);
    const WeightShape& s = kShapes[info.shape];
    CurrentProblem& problems = current_problem();
    double bytes = 0.0;
    switch (info.kind) {
      case CaseKind::read: {
        ReadProblem& p = problems.get<ReadProblem>("read");
        bytes = p.bytes();
        time_each_call(state, bytes, [&] { p.stream.run(); });
        break;
      }
      case CaseKind::eigen:
      case CaseKind::matmul: {
        F32Problem& p = problems.get<F32Problem>(fmt::format("f32/{}", shape_label(s)), s);
        bytes = p.bytes(info.m);
        if (info.kind == CaseKind::eigen) {
          time_each_call(state, bytes, [&] { p.run_eigen(info.m); });
        } else {
          time_each_call(state, bytes, [&] { p.run_matmul(info.m); });
        }
        break;
      }
      case CaseKind::quant: {
        const Format& format = formats()[info.format];
        QuantProblem& p = problems.get<QuantProblem>(fmt::format("{}/{}", format.name, shape_label(s)), s, format);
        bytes = p.bytes(info.m);
        time_each_call(state, bytes, [&] { p.run(info.m, info.path); });
        break;
      }
    }
    bytes_per_call()[name] = bytes;
  };
  benchmark::internal::Benchmark* b = benchmark::RegisterBenchmark(name.c_str(), body)
                                          ->UseManualTime()
                                          ->Unit(benchmark::kMicrosecond)
                                          ->ComputeStatistics("min", persona::bench::min_of);
  if (info.level == IsaLevel::scalar) b->Repetitions(std::min(repetitions, kScalarRepetitions));
  registered_cases().push_back(info);
}

// Per shape: the read probe, the f32 baselines, then each format (each a problem of its own).
void register_benchmarks(int repetitions) {
  const IsaLevel best = best_level();
  const auto add = [repetitions](const CaseInfo& info) { add_case(info, repetitions); };
  for (std::size_t si = 0; si < kShapes.size(); ++si) {
    const WeightShape& s = kShapes[si];
    std::vector<int> thread_counts{1};
    if (s.more_threads) thread_counts.push_back(kMoreThreads);

    for (int threads : thread_counts) add({.kind = CaseKind::read, .shape = si, .threads = threads});
    for (std::size_t m : kTokenCounts) add({.kind = CaseKind::eigen, .shape = si, .m = m});
    for (int threads : thread_counts) {
      for (std::size_t m : kTokenCounts) {
        add({.kind = CaseKind::matmul, .shape = si, .m = m, .level = best, .threads = threads});
      }
    }

    for (std::size_t fi = 0; fi < formats().size(); ++fi) {
      const Format& format = formats()[fi];
      if (s.k % format.spec.group_size != 0) continue;  // not quantizable; the notes say so
      std::vector<QuantProductPath> paths{QuantProductPath::int8_activations};
      if (format.both_paths) paths.push_back(QuantProductPath::f32_activations);
      for (int threads : thread_counts) {
        for (QuantProductPath path : paths) {
          for (std::size_t m : kTokenCounts) {
            add({.shape = si, .m = m, .format = fi, .path = path, .level = best, .threads = threads});
          }
        }
      }
      // int4 at the other levels: decode (m = 1) and a batch of 8. Scalar only decodes, int8 path only.
      if (!s.every_level || fi != 0) continue;
      for (QuantProductPath path : paths) {
        for (IsaLevel level : persona::supported_isa_levels()) {
          if (level == best) continue;
          for (std::size_t m : {std::size_t{1}, std::size_t{8}}) {
            if (level == IsaLevel::scalar && (m != 1 || path != QuantProductPath::int8_activations)) continue;
            add({.shape = si, .m = m, .format = fi, .path = path, .level = level});
          }
        }
      }
    }
  }
}

// ---- Summary ----

struct Figures {
  double median_seconds = 0.0;  // median over repetitions of each repetition's median call
  double min_seconds = 0.0;     // the fastest call
  double bytes = 0.0;           // per call
};

class Summary {
 public:
  explicit Summary(const std::map<std::string, Measurement>& results) : results_(results) {}

  std::optional<Figures> figures(const CaseInfo& c) const {
    const std::string name = benchmark_name(c);
    const auto it = results_.find(name);
    const auto bytes = bytes_per_call().find(name);
    if (it == results_.end() || bytes == bytes_per_call().end()) return std::nullopt;
    const Measurement& m = it->second;
    const auto p50 = m.median_counters.find("p50");
    const auto best = m.min_counters.find("best");
    if (p50 == m.median_counters.end() || best == m.min_counters.end()) return std::nullopt;
    return Figures{p50->second, best->second, bytes->second};
  }

  std::optional<Figures> read_probe(std::size_t shape, int threads) const {
    return figures({.kind = CaseKind::read, .shape = shape, .threads = threads});
  }
  std::optional<Figures> eigen(std::size_t shape, std::size_t m) const {
    return figures({.kind = CaseKind::eigen, .shape = shape, .m = m});
  }
  std::optional<Figures> matmul(std::size_t shape, std::size_t m, int threads) const {
    return figures({.kind = CaseKind::matmul, .shape = shape, .m = m, .level = best_level(), .threads = threads});
  }

 private:
  const std::map<std::string, Measurement>& results_;
};

double gb_per_second(double bytes, double seconds) { return bytes / seconds / 1e9; }

std::string case_weights(const CaseInfo& c) {
  switch (c.kind) {
    case CaseKind::read: return "read probe";
    case CaseKind::eigen: return "f32 Eigen";
    case CaseKind::matmul: return "f32 persona::matmul";
    case CaseKind::quant: return std::string(formats()[c.format].name);
  }
  return "";
}

void print_table(const std::vector<CaseInfo>& cases, const Summary& summary) {
  fmt::print(
      "| W [n×k] | m | weights | path | level | threads | median | min | GB/s | GB/s at min | read GB/s | % of read "
      "| GFLOP/s | × f32 Eigen | × persona matmul |\n");
  fmt::print("|---|--:|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
  for (const CaseInfo& c : cases) {
    if (c.kind == CaseKind::read) continue;
    const std::optional<Figures> f = summary.figures(c);
    if (!f) continue;
    const WeightShape& s = kShapes[c.shape];
    const double gb = gb_per_second(f->bytes, f->median_seconds);
    const std::optional<Figures> read = summary.read_probe(c.shape, c.threads);
    const double read_gb = read ? gb_per_second(read->bytes, read->median_seconds) : 0.0;
    const std::optional<Figures> eigen = summary.eigen(c.shape, c.m);
    const std::optional<Figures> matmul = summary.matmul(c.shape, c.m, c.threads);
    const double flops = 2.0 * static_cast<double>(c.m * s.n * s.k);
    auto ratio = [&](const std::optional<Figures>& baseline) {
      return baseline ? fmt::format("{:.2f}", baseline->median_seconds / f->median_seconds) : std::string();
    };
    fmt::print("| {} | {} | {} | {} | {} | {} | {} | {} | {:.1f} | {:.1f} | {} | {} | {} | {} | {} |\n", shape_label(s),
               c.m, case_weights(c), c.kind == CaseKind::quant ? path_name(c.path) : "",
               c.level ? persona::to_string(*c.level) : Eigen::SimdInstructionSetsInUse(), c.threads,
               format_time(f->median_seconds), format_time(f->min_seconds), gb, gb_per_second(f->bytes, f->min_seconds),
               read ? fmt::format("{:.1f}", read_gb) : "", read ? fmt::format("{:.0f}%", 100.0 * gb / read_gb) : "",
               c.m > 1 ? fmt::format("{:.1f}", flops / f->median_seconds / 1e9) : "", ratio(eigen), ratio(matmul));
  }
}

void print_read_probes(const std::vector<CaseInfo>& cases, const Summary& summary) {
  fmt::print("Read probe (a sum over {} MiB, run just before each shape's cases):\n\n", read_probe_bytes() / kMebi);
  fmt::print("| before W | threads | median | min | GB/s | GB/s at min |\n|---|--:|--:|--:|--:|--:|\n");
  for (const CaseInfo& c : cases) {
    if (c.kind != CaseKind::read) continue;
    if (const std::optional<Figures> f = summary.figures(c)) {
      fmt::print("| {} | {} | {} | {} | {:.1f} | {:.1f} |\n", shape_label(kShapes[c.shape]), c.threads,
                 format_time(f->median_seconds), format_time(f->min_seconds),
                 gb_per_second(f->bytes, f->median_seconds), gb_per_second(f->bytes, f->min_seconds));
    }
  }
}

void print_notes() {
  const persona::bench::CacheSize llc = persona::bench::last_level_cache();
  const long sysconf_llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
  std::string shapes;
  for (const WeightShape& s : kShapes)
    shapes += fmt::format("{}{} ({})", shapes.empty() ? "" : ", ", shape_label(s), s.role);
  fmt::print("\nNotes:\n- W [n×k], n outputs by k inputs: {}. m: tokens, the rows of x.\n", shapes);
  fmt::print(
      "- Times: each sample is one product on the next weight copy, timed alone. median: the median over "
      "repetitions of each repetition's median sample; min: the fastest sample of all. GB/s: the bytes one "
      "product moves (QuantizedMatrix::bytes() or the f32 weights, plus the f32 activations x [m, k] and output "
      "y [m, n]) over the median (or min) time, in 10^9 B/s. % of read: GB/s against the read probe run just "
      "before this shape on as many threads (both medians). GFLOP/s: 2·m·n·k over the median time (m > 1).\n"
      "- × f32 Eigen: the median of `c.noalias() = x * W.transpose()` (row-major f32 W, Eigen built for {}, "
      "1 thread) over this row's. × persona matmul: the same for persona::matmul(x, W, y, Transpose::yes) at "
      "{} on as many threads as this row. Both baselines rotate over f32 copies too (listed below).\n"
      "- level: what persona::ScopedIsaLevel forced; the best one, {}, unless the row says otherwise. int4 at "
      "4096x4096 also runs at each other level for m = 1 and 8 (scalar: m = 1 and the int8 path only, {} "
      "repetitions at most).\n"
      "- threads: persona::ScopedNumThreads; goals are judged on 1 thread. Eigen runs on 1 thread always.\n"
      "- LoRA: 16x4096 is a rank-16 LoRA A; 4096x32 a rank-32 LoRA B. A rank-16 LoRA B (k = 16) cannot be "
      "quantized: the smallest group size is 32 along k. nf4 g64 needs k to be a multiple of 64, so it does not "
      "run on 4096x32.\n"
      "- Last-level cache: {} MiB, from {}{}. Weight copies each case rotates over:\n",
      Eigen::SimdInstructionSetsInUse(), persona::to_string(best_level()), persona::to_string(best_level()),
      kScalarRepetitions, llc.bytes / kMebi, llc.source,
      sysconf_llc > 0 && static_cast<std::size_t>(sysconf_llc) != llc.bytes
          ? fmt::format(" (sysconf(_SC_LEVEL3_CACHE_SIZE) says {} MiB)", static_cast<std::size_t>(sysconf_llc) / kMebi)
          : std::string());
  for (const std::string& note : copy_notes()) fmt::print("  - {}\n", note);
}

void print_targets(const Summary& summary) {
  constexpr std::size_t kSquare = 0;  // kShapes[0] is 4096x4096
  const IsaLevel best = best_level();
  const auto quant = [&](std::size_t format, std::size_t m) {
    return summary.figures({.shape = kSquare, .m = m, .format = format, .level = best});
  };
  const std::optional<Figures> read = summary.read_probe(kSquare, 1);
  fmt::print(
      "\nTargets (1 thread, cold weights, W 4096x4096, {}, int8_activations path; judged on medians, the best "
      "samples in brackets):\n",
      persona::to_string(best));
  const auto verdict = [](bool met) { return met ? "MET" : "NOT MET"; };
  const std::array<std::pair<std::size_t, double>, 2> gemv_goals{{{0, 0.75}, {1, 0.80}}};
  for (const auto& [format, goal] : gemv_goals) {
    const std::string_view name = formats()[format].name;
    const std::optional<Figures> f = quant(format, 1);
    if (!f || !read) {
      fmt::print("- {} GEMV (m=1) >= {:.0f}% of read bandwidth: not run\n", name, 100 * goal);
      continue;
    }
    const double read_gb = gb_per_second(read->bytes, read->median_seconds);
    const double share = gb_per_second(f->bytes, f->median_seconds) / read_gb;
    fmt::print("- {} GEMV (m=1) >= {:.0f}% of read bandwidth: {:.1f} GB/s = {:.1f}% of {:.1f} GB/s [{:.1f}%] — {}\n",
               name, 100 * goal, gb_per_second(f->bytes, f->median_seconds), 100 * share, read_gb,
               100 * gb_per_second(f->bytes, f->min_seconds) / gb_per_second(read->bytes, read->min_seconds),
               verdict(share >= goal));
  }
  for (std::size_t m : {std::size_t{8}, std::size_t{16}, std::size_t{32}}) {
    const std::optional<Figures> f = quant(0, m);
    const std::optional<Figures> eigen = summary.eigen(kSquare, m);
    if (!f || !eigen) {
      fmt::print("- int4 m={} >= 3x f32 Eigen: not run\n", m);
      continue;
    }
    const double speedup = eigen->median_seconds / f->median_seconds;
    fmt::print("- int4 m={} >= 3x f32 Eigen: {:.2f}x (int4 {}, Eigen {}) [{:.2f}x] — {}\n", m, speedup,
               format_time(f->median_seconds), format_time(eigen->median_seconds), eigen->min_seconds / f->min_seconds,
               verdict(speedup >= 3.0));
  }
}

void print_summary(const std::vector<CaseInfo>& cases, const std::map<std::string, Measurement>& results) {
  const Summary summary(results);
  fmt::print("\npersona: {}. Eigen baselines built for: {}.\n\n", persona::cpu_features().to_string(),
             Eigen::SimdInstructionSetsInUse());
  print_read_probes(cases, summary);
  fmt::print("\n");
  print_table(cases, summary);
  print_notes();
  print_targets(summary);
}

}  // namespace

int main(int argc, char** argv) {
  // Defaults for flags the command line does not set: many short repetitions, whose medians and minimum
  // the summary reports, and only their aggregates on the console.
  persona::bench::Arguments args(
      argc, argv,
      {"--benchmark_repetitions=12", "--benchmark_min_time=0.05", "--benchmark_display_aggregates_only=true"});
  benchmark::Initialize(args.count(), args.values());
  if (benchmark::ReportUnrecognizedArguments(*args.count(), args.values())) return 1;
  register_benchmarks(std::max(1, std::atoi(args.value_of("--benchmark_repetitions").c_str())));
  persona::bench::SummaryReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  if (!reporter.results().empty()) print_summary(registered_cases(), reporter.results());
  return 0;
}
