// Benchmarks of the dense core ops: persona's fast path at every SIMD level this CPU runs, its scalar
// *_ref oracle and Eigen, next to a STREAM-like memory-bandwidth probe. After the usual console output it
// prints a markdown table of medians, minimums, speedups and bandwidth from the same run; how to read it
// is in docs/performance.md.
#include "bench_support.hpp"
#include "persona/core/cpu_features.hpp"
#include "persona/core/dtype.hpp"
#include "persona/core/ops.hpp"
#include "persona/core/tensor.hpp"
#include "persona/core/threading.hpp"

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using persona::IsaLevel;
using persona::Tensor;
using persona::bench::format_time;
using persona::bench::last_level_cache_bytes;
using persona::bench::Measurement;
using persona::bench::mebi_label;
using persona::bench::min_of;
using persona::bench::Stream;
using persona::bench::StreamKernel;
using persona::bench::SummaryReporter;

constexpr std::size_t kHidden = 4096;                    // Llama-7B's hidden size
constexpr std::array<std::size_t, 2> kRowCounts{1, 64};  // one decode token; a 64-token batch
constexpr std::size_t kConvertElements = std::size_t{1} << 20;
constexpr std::size_t kStreamElements = std::size_t{32} << 20;  // 128 MiB per array
constexpr int kMoreThreads = 2;
constexpr float kEps = 1e-5f;

// ---- Inputs and Eigen views ----

Tensor<float> random_tensor(persona::Shape shape, std::uint32_t seed) {
  Tensor<float> t(shape);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (float& v : t.span()) v = uniform(rng);
  return t;
}

// What an op that reads or writes each of these tensors once must move.
template <class... T>
std::int64_t bytes_of(const Tensor<T>&... tensors) {
  return static_cast<std::int64_t>(((tensors.numel() * sizeof(T)) + ...));
}

using RowMajorMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMajorArray = Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowArray = Eigen::Array<float, 1, Eigen::Dynamic>;

Eigen::Index eigen_size(std::size_t n) { return static_cast<Eigen::Index>(n); }

// A contiguous row-major map of a rank-2 tensor; Plain is const for inputs. (Tensor::as_eigen() maps
// with runtime strides, which Eigen does not vectorize.)
template <class Plain, class Owner>
Eigen::Map<Plain> eigen_map(Owner& t) {
  return Eigen::Map<Plain>(t.data(), eigen_size(t.dim(0)), eigen_size(t.dim(1)));
}

// ---- Problems ----
// A problem owns the inputs and outputs of one op at one size. run() is persona's fast path (at the
// active level, on num_threads() threads), run_ref() the scalar oracle, run_eigen() (where Eigen has an
// equivalent) the same math in Eigen. bytes() is what one call must move at least; flops(), if present,
// its arithmetic.

// The decoder's linear layer: activations a [m, k] times weights [n, k] transposed gives c [m, n].
// Each call takes the next of several copies of the weights, as a decoder walks its layers; together they
// fill kCacheMultiple times the LLC, so no call finds its weights in cache. (A single 64 MiB matrix on a
// 32 MiB L3 partly stays there from one call to the next.)
struct Matmul {
  static constexpr std::string_view op = "matmul";
  static constexpr std::size_t kCacheMultiple = 8;
  Tensor<float> a;
  std::vector<Tensor<float>> layers;
  Tensor<float> c;
  std::size_t next_layer = 0;

  Matmul(std::size_t m, std::size_t n, std::size_t k) : a(random_tensor({m, k}, 1)), c({m, n}) {
    const Tensor<float> w = random_tensor({n, k}, 2);
    const std::size_t w_bytes = w.numel() * sizeof(float);
    layers.assign(std::max<std::size_t>(1, (kCacheMultiple * last_level_cache_bytes() + w_bytes - 1) / w_bytes), w);
  }
  const Tensor<float>& next_weight() {
    const Tensor<float>& w = layers[next_layer];
    next_layer = (next_layer + 1) % layers.size();
    return w;
  }
  void run() { persona::matmul(a.view(), next_weight().view(), c.view(), persona::Transpose::yes); }
  void run_ref() { persona::matmul_ref(a.view(), next_weight().view(), c.view(), persona::Transpose::yes); }
  void run_eigen() {
    eigen_map<RowMajorMatrix>(c).noalias() =
        eigen_map<const RowMajorMatrix>(a) * eigen_map<const RowMajorMatrix>(next_weight()).transpose();
  }
  std::int64_t bytes() const { return bytes_of(a, layers[0], c); }
  double flops() const { return 2.0 * static_cast<double>(a.numel()) * static_cast<double>(layers[0].dim(0)); }
};

struct Dot {
  static constexpr std::string_view op = "dot";
  Tensor<float> a, b;
  float result = 0.0f;

  explicit Dot(std::size_t n) : a(random_tensor({n}, 3)), b(random_tensor({n}, 4)) {}
  void run() { result = persona::dot(a.span(), b.span()); }
  void run_ref() { result = persona::dot_ref(a.span(), b.span()); }
  void run_eigen() {
    using Vector = Eigen::Map<const Eigen::VectorXf>;
    result = Vector(a.data(), eigen_size(a.numel())).dot(Vector(b.data(), eigen_size(b.numel())));
  }
  std::int64_t bytes() const { return bytes_of(a, b); }
};

// Row ops: x [rows, n] -> out [rows, n].
struct Rmsnorm {
  static constexpr std::string_view op = "rmsnorm";
  Tensor<float> x, weight, out;

  Rmsnorm(std::size_t rows, std::size_t n)
      : x(random_tensor({rows, n}, 5)), weight(random_tensor({n}, 6)), out({rows, n}) {}
  void run() { persona::rmsnorm(x.view(), weight.span(), kEps, out.view()); }
  void run_ref() { persona::rmsnorm_ref(x.view(), weight.span(), kEps, out.view()); }
  void run_eigen() {
    const auto in = eigen_map<const RowMajorArray>(x);
    auto y = eigen_map<RowMajorArray>(out);
    const Eigen::Map<const RowArray> w(weight.data(), in.cols());
    for (Eigen::Index r = 0; r < in.rows(); ++r) {
      y.row(r) = in.row(r) * (1.0f / std::sqrt(in.row(r).square().mean() + kEps)) * w;
    }
  }
  std::int64_t bytes() const { return bytes_of(x, weight, out); }
};

struct Softmax {
  static constexpr std::string_view op = "softmax";
  Tensor<float> x, out;

  Softmax(std::size_t rows, std::size_t n) : x(random_tensor({rows, n}, 7)), out({rows, n}) {}
  void run() { persona::softmax(x.view(), out.view()); }
  void run_ref() { persona::softmax_ref(x.view(), out.view()); }
  void run_eigen() {
    const auto in = eigen_map<const RowMajorArray>(x);
    auto y = eigen_map<RowMajorArray>(out);
    for (Eigen::Index r = 0; r < in.rows(); ++r) {
      y.row(r) = (in.row(r) - in.row(r).maxCoeff()).exp();
      y.row(r) /= y.row(r).sum();
    }
  }
  std::int64_t bytes() const { return bytes_of(x, out); }
};

struct Silu {
  static constexpr std::string_view op = "silu";
  Tensor<float> x, out;

  Silu(std::size_t rows, std::size_t n) : x(random_tensor({rows, n}, 8)), out({rows, n}) {}
  void run() { persona::silu(x.view(), out.view()); }
  void run_ref() { persona::silu_ref(x.view(), out.view()); }
  void run_eigen() {
    const auto in = eigen_map<const RowMajorArray>(x);
    eigen_map<RowMajorArray>(out) = in / (1.0f + (-in).exp());
  }
  std::int64_t bytes() const { return bytes_of(x, out); }
};

struct Swiglu {
  static constexpr std::string_view op = "swiglu";
  Tensor<float> gate, up, out;

  Swiglu(std::size_t rows, std::size_t n)
      : gate(random_tensor({rows, n}, 9)), up(random_tensor({rows, n}, 10)), out({rows, n}) {}
  void run() { persona::swiglu(gate.view(), up.view(), out.view()); }
  void run_ref() { persona::swiglu_ref(gate.view(), up.view(), out.view()); }
  void run_eigen() {
    const auto g = eigen_map<const RowMajorArray>(gate);
    eigen_map<RowMajorArray>(out) = g / (1.0f + (-g).exp()) * eigen_map<const RowMajorArray>(up);
  }
  std::int64_t bytes() const { return bytes_of(gate, up, out); }
};

// x [tokens, heads, head_dim], rotated in place at a position deep into a sequence. Every call rotates
// the previous result again, which keeps the values bounded (a rotation preserves norms).
struct Rope {
  static constexpr std::string_view op = "rope";
  static constexpr std::size_t kPosition = 1000;
  Tensor<float> x;

  Rope(std::size_t tokens, std::size_t heads, std::size_t head_dim) : x(random_tensor({tokens, heads, head_dim}, 11)) {}
  void run() { persona::rope(x.view(), kPosition); }
  void run_ref() { persona::rope_ref(x.view(), kPosition); }
  std::int64_t bytes() const { return 2 * bytes_of(x); }
};

// Eigen's scalar type for each persona element type.
template <class T>
struct EigenScalar {
  using type = T;
};
template <>
struct EigenScalar<persona::f16> {
  using type = Eigen::half;
};
template <>
struct EigenScalar<persona::bf16> {
  using type = Eigen::bfloat16;
};

// One element through dtype.hpp's scalar conversions, the reference for the bulk ones.
template <class To, class From>
To convert_one(From value) {
  if constexpr (std::is_same_v<To, From>) {
    return value;
  } else if constexpr (std::is_same_v<To, float>) {
    return persona::to_f32(value);
  } else if constexpr (std::is_same_v<To, persona::f16>) {
    return persona::to_f16(value);
  } else {
    return persona::to_bf16(value);
  }
}

// Bulk persona::convert between f32 and a 16-bit float type; Eigen converts its own copy of the input.
template <class From, class To>
struct Convert {
  template <class T>
  using EigenVector = Eigen::Matrix<typename EigenScalar<T>::type, Eigen::Dynamic, 1>;

  static inline const std::string op =
      fmt::format("{}_to_{}", persona::name_of(persona::dtype_of_v<From>), persona::name_of(persona::dtype_of_v<To>));
  std::vector<From> in;
  std::vector<To> out;
  EigenVector<From> eigen_in;
  EigenVector<To> eigen_out;

  explicit Convert(std::size_t n) : in(n), out(n), eigen_out(eigen_size(n)) {
    const Tensor<float> values = random_tensor({n}, 12);
    std::ranges::transform(values.span(), in.begin(), convert_one<From, float>);
    eigen_in = Eigen::Map<const Eigen::VectorXf>(values.data(), eigen_size(n))
                   .template cast<typename EigenScalar<From>::type>();
  }
  void run() { persona::convert(std::span<const From>(in), std::span<To>(out)); }
  void run_ref() { std::ranges::transform(in, out.begin(), convert_one<To, From>); }
  void run_eigen() { eigen_out = eigen_in.template cast<typename EigenScalar<To>::type>(); }
  std::int64_t bytes() const { return static_cast<std::int64_t>(in.size() * (sizeof(From) + sizeof(To))); }
};

// ---- Registration ----

// One registered benchmark, as the summary table describes it.
struct CaseInfo {
  std::string op, size, variant;
  int threads = 1;
  bool streams_from_dram = false;  // its data lives far beyond the LLC: compared with the triad bandwidth
};

// "op/variant/size", so that a filter like "rmsnorm/.*/64x4096" picks all variants of one size.
std::string benchmark_name(std::string_view op, std::string_view variant, std::string_view size, int threads) {
  std::string name = fmt::format("{}/{}/{}", op, variant, size);
  if (threads > 1) name += fmt::format("/threads:{}", threads);
  return name;
}
std::string benchmark_name(const CaseInfo& c) { return benchmark_name(c.op, c.variant, c.size, c.threads); }

std::vector<CaseInfo>& registered_cases() {
  static std::vector<CaseInfo> cases;
  return cases;
}

// Builds a problem on first use and keeps it: every variant of one size reads the same inputs, and a
// benchmark the filter skips allocates nothing.
template <class Problem>
class Lazy {
 public:
  explicit Lazy(std::function<Problem()> make) : make_(std::move(make)) {}
  Problem& get() {
    if (!problem_) problem_.emplace(make_());
    return *problem_;
  }

 private:
  std::function<Problem()> make_;
  std::optional<Problem> problem_;
};

// The timed loop every benchmark shares, and the counters the summary reads.
template <class Problem, class Call>
auto timed(std::shared_ptr<Lazy<Problem>> problem, Call call) {
  return [problem, call](benchmark::State& state) {
    Problem& p = problem->get();
    for ([[maybe_unused]] auto _ : state) {
      call(p);
      benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(state.iterations() * p.bytes());
    if constexpr (requires { p.flops(); }) {
      state.counters["flops"] = benchmark::Counter(p.flops(), benchmark::Counter::kIsIterationInvariantRate);
    }
  };
}

// Registers `body` to run at `level` (the active one if none) on info.threads threads.
template <class Body>
void add_case(CaseInfo info, std::optional<IsaLevel> level, Body body) {
  const int threads = info.threads;
  benchmark::RegisterBenchmark(benchmark_name(info).c_str(),
                               [level, threads, body](benchmark::State& state) {
                                 std::optional<persona::ScopedIsaLevel> isa;
                                 if (level) isa.emplace(*level);
                                 persona::ScopedNumThreads thread_limit(threads);
                                 body(state);
                               })
      // Wall time: on more than one thread, most of the work runs where the CPU timer does not look.
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond)
      ->ComputeStatistics("min", min_of);
  registered_cases().push_back(std::move(info));
}

struct Options {
  bool more_threads = false;       // also run the best level on kMoreThreads threads
  bool streams_from_dram = false;  // see CaseInfo
};

// One problem at every supported SIMD level on one thread (and on more at the best level, if asked),
// then the scalar reference and, where it exists, Eigen.
template <class Problem>
void register_problem(const std::string& size, std::function<Problem()> make, Options options = {}) {
  auto problem = std::make_shared<Lazy<Problem>>(std::move(make));
  auto info = [&](std::string_view variant, int threads) {
    return CaseInfo{std::string(Problem::op), size, std::string(variant), threads, options.streams_from_dram};
  };
  const auto run = [](Problem& p) { p.run(); };
  const std::vector<IsaLevel> levels = persona::supported_isa_levels();
  for (IsaLevel level : levels) add_case(info(persona::to_string(level), 1), level, timed(problem, run));
  if (options.more_threads) {
    add_case(info(persona::to_string(levels.back()), kMoreThreads), levels.back(), timed(problem, run));
  }
  add_case(info("ref", 1), std::nullopt, timed(problem, [](Problem& p) { p.run_ref(); }));
  if constexpr (requires(Problem & p) { p.run_eigen(); }) {
    add_case(info("eigen", 1), std::nullopt, timed(problem, [](Problem& p) { p.run_eigen(); }));
  }
}

// A row op at hidden size for each row count; only a batch can be split across threads.
template <class Problem>
void register_row_op(Options batch_options = {}) {
  for (std::size_t rows : kRowCounts) {
    register_problem<Problem>(
        fmt::format("{}x{}", rows, kHidden), [rows] { return Problem(rows, kHidden); },
        rows > 1 ? batch_options : Options{});
  }
}

template <class From, class To>
void register_convert() {
  register_problem<Convert<From, To>>(mebi_label(kConvertElements), [] { return Convert<From, To>(kConvertElements); });
}

void register_memory_probes() {
  for (StreamKernel kernel : {StreamKernel::read, StreamKernel::copy, StreamKernel::triad}) {
    auto problem = std::make_shared<Lazy<Stream>>([kernel] { return Stream(kernel, kStreamElements); });
    for (int threads : {1, kMoreThreads}) {
      add_case(CaseInfo{std::string(Stream::op), mebi_label(kStreamElements), to_string(kernel), threads, true},
               std::nullopt, timed(problem, [](Stream& s) { s.run(); }));
    }
  }
}

void register_benchmarks() {
  register_memory_probes();
  // At m = 1 the linear layer is a GEMV: it reads each weight once, so memory bandwidth bounds it.
  for (std::size_t m : kRowCounts) {
    register_problem<Matmul>(fmt::format("{}x{}x{}", m, kHidden, kHidden), [m] { return Matmul(m, kHidden, kHidden); },
                             {.more_threads = true, .streams_from_dram = m == 1});
  }
  register_problem<Dot>(std::to_string(kHidden), [] { return Dot(kHidden); });
  register_row_op<Rmsnorm>();
  register_row_op<Softmax>({.more_threads = true});
  register_row_op<Silu>();
  register_row_op<Swiglu>();
  constexpr std::size_t kHeads = 32, kHeadDim = 128;  // kHeads * kHeadDim = kHidden
  for (std::size_t tokens : kRowCounts) {
    register_problem<Rope>(fmt::format("{}x{}x{}", tokens, kHeads, kHeadDim),
                           [tokens] { return Rope(tokens, kHeads, kHeadDim); });
  }
  register_convert<float, persona::f16>();
  register_convert<persona::f16, float>();
  register_convert<float, persona::bf16>();
  register_convert<persona::bf16, float>();
}

// ---- Summary ----

void print_summary(const std::vector<CaseInfo>& cases, const std::map<std::string, Measurement>& results) {
  auto find = [&](std::string_view op, std::string_view variant, std::string_view size,
                  int threads) -> const Measurement* {
    const auto it = results.find(benchmark_name(op, variant, size, threads));
    return it == results.end() ? nullptr : &it->second;
  };
  auto speedup = [](const Measurement* baseline, const Measurement& m) {
    return baseline ? fmt::format("{:.2f}", baseline->median_seconds / m.median_seconds) : std::string();
  };

  fmt::print("\npersona: {}. Eigen baselines built for: {}. Last-level cache: {} MiB.\n\n",
             persona::cpu_features().to_string(), Eigen::SimdInstructionSetsInUse(), last_level_cache_bytes() >> 20);
  fmt::print("| op | size | threads | variant | median | min | × vs ref | × vs eigen | GB/s | % of triad |\n");
  fmt::print("|---|---|--:|---|--:|--:|--:|--:|--:|--:|\n");
  for (const CaseInfo& c : cases) {
    const Measurement* m = find(c.op, c.variant, c.size, c.threads);
    if (m == nullptr) continue;
    const Measurement* triad = find(Stream::op, "triad", mebi_label(kStreamElements), c.threads);
    const std::string gb_per_second = m->bytes_per_second > 0 ? fmt::format("{:.1f}", m->bytes_per_second / 1e9) : "";
    const std::string of_triad = c.streams_from_dram && triad != nullptr
                                     ? fmt::format("{:.0f}%", 100.0 * m->bytes_per_second / triad->bytes_per_second)
                                     : "";
    fmt::print("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", c.op, c.size, c.threads, c.variant,
               format_time(m->median_seconds), format_time(m->min_seconds), speedup(find(c.op, "ref", c.size, 1), *m),
               speedup(find(c.op, "eigen", c.size, 1), *m), gb_per_second, of_triad);
  }
  fmt::print(
      "\n× vs ref, × vs eigen: the baseline's median time over this row's (> 1: this row is faster); the "
      "baselines run on 1 thread. GB/s: the bytes a call must move over the median time. % of triad: against "
      "the stream triad on as many threads, for rows whose data streams from memory.\n");
}

}  // namespace

int main(int argc, char** argv) {
  // Five repetitions, whose median and minimum the summary reports, and only their aggregates on the console.
  return persona::bench::run_benchmarks(argc, argv,
                                        {"--benchmark_repetitions=5", "--benchmark_display_aggregates_only=true"},
                                        register_benchmarks, [](const auto& results) {
                                          if (!results.empty()) print_summary(registered_cases(), results);
                                        });
}
