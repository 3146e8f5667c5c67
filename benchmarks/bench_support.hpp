// What the benchmark binaries share: the last-level cache size (to size working sets that miss it), a
// STREAM-like memory-bandwidth probe, a reporter that keeps each benchmark's median and minimum for the
// summary table a binary prints at the end, and the defaults they give Google Benchmark's flags.
#pragma once

#include "persona/core/tensor.hpp"
#include "persona/core/threading.hpp"

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace persona::bench {

// ---- Machine ----

struct CacheSize {
  std::size_t bytes = 0;
  std::string source;  // where the size came from, for the summary's notes
};

// The data or unified cache of the highest level cpu0 has, in bytes ("32768K" in
// /sys/devices/system/cpu/cpu0/cache/index*/size); 0 if /sys does not say.
inline std::size_t last_level_cache_from_sys() {
  namespace fs = std::filesystem;
  std::error_code error;
  int best_level = 0;
  std::size_t best_bytes = 0;
  for (const fs::directory_entry& entry : fs::directory_iterator("/sys/devices/system/cpu/cpu0/cache", error)) {
    if (!entry.path().filename().string().starts_with("index")) continue;
    int level = 0;
    std::string type, size;
    std::ifstream(entry.path() / "level") >> level;
    std::ifstream(entry.path() / "type") >> type;
    std::ifstream(entry.path() / "size") >> size;
    if (type == "Instruction" || size.empty() || level < best_level) continue;
    std::size_t digits = 0;
    const unsigned long long value = std::stoull(size, &digits);
    const std::string_view unit = std::string_view(size).substr(digits);
    const int shift = unit == "K" ? 10 : unit == "M" ? 20 : unit == "G" ? 30 : 0;
    best_level = level;
    best_bytes = static_cast<std::size_t>(value) << shift;
  }
  return best_bytes;
}

// /sys first: in a VM, glibc's sysconf(_SC_LEVEL3_CACHE_SIZE) can describe the host (a machine with a
// 32 MiB L3 in /sys and lscpu answered 384 MiB). Then sysconf, then 32 MiB.
inline CacheSize last_level_cache() {
  static const CacheSize cache = [] {
    if (const std::size_t bytes = last_level_cache_from_sys(); bytes > 0) {
      return CacheSize{bytes, "/sys/devices/system/cpu/cpu0/cache"};
    }
    if (const long bytes = sysconf(_SC_LEVEL3_CACHE_SIZE); bytes > 0) {
      return CacheSize{static_cast<std::size_t>(bytes), "sysconf(_SC_LEVEL3_CACHE_SIZE)"};
    }
    return CacheSize{std::size_t{32} << 20, "fallback (neither /sys nor sysconf knew)"};
  }();
  return cache;
}

inline std::size_t last_level_cache_bytes() { return last_level_cache().bytes; }

// "32Mi" for 32 << 20.
inline std::string mebi_label(std::size_t n) { return fmt::format("{}Mi", n >> 20); }

// ---- Memory bandwidth ----

// STREAM-like kernels on arrays far beyond the LLC: the memory roofline. `read` (a sum) bounds a GEMV,
// which only reads its weights; copy and triad also write. As in STREAM, bytes() does not count the read
// a cached store makes of its destination line (write-allocate), so real traffic is higher.
enum class StreamKernel { read, copy, triad };

inline const char* to_string(StreamKernel kernel) {
  switch (kernel) {
    case StreamKernel::read: return "read";
    case StreamKernel::copy: return "copy";
    case StreamKernel::triad: return "triad";
  }
  return "unknown";
}

struct Stream {
  static constexpr std::string_view op = "stream";
  static constexpr std::size_t kGrain = std::size_t{1} << 20;  // floats a thread takes at a time
  StreamKernel kernel;
  std::vector<Tensor<float>> arrays;  // [a, b, c] of STREAM's a = b + s * c, as many as the kernel uses
  std::vector<float> sums;            // one partial sum per chunk, so `read` has a result to keep

  Stream(StreamKernel k, std::size_t n) : kernel(k), sums((n + kGrain - 1) / kGrain) {
    const std::size_t count = k == StreamKernel::read ? 1 : k == StreamKernel::copy ? 2 : 3;
    // Tensor zero-fills what it allocates, so every page is backed by memory before the first timed run.
    for (std::size_t i = 0; i < count; ++i) arrays.emplace_back(Shape{n});
  }

  void run() {
    const std::size_t n = arrays[0].numel();
    float* a = arrays[0].data();
    switch (kernel) {
      case StreamKernel::read:
        parallel_for(n, kGrain,
                     [&](std::size_t first, std::size_t last) { sums[first / kGrain] = sum(a + first, last - first); });
        return;
      case StreamKernel::copy: {
        const float* b = arrays[1].data();
        parallel_for(n, kGrain,
                     [&](std::size_t first, std::size_t last) { std::copy(b + first, b + last, a + first); });
        return;
      }
      case StreamKernel::triad: {
        const float* b = arrays[1].data();
        const float* c = arrays[2].data();
        parallel_for(n, kGrain, [&](std::size_t first, std::size_t last) {
          for (std::size_t i = first; i < last; ++i) a[i] = b[i] + 3.0f * c[i];
        });
        return;
      }
    }
  }

  std::int64_t bytes() const { return static_cast<std::int64_t>(arrays.size() * arrays[0].numel() * sizeof(float)); }

  // The widest vectors the CPU has: compiled for this file's baseline (SSE2), one core cannot add as fast as
  // memory delivers (on a Zen 5 core, 31 GB/s with SSE2 and 16 partial sums, 46 GB/s with AVX-512).
  static float sum(const float* x, std::size_t n) {
#if defined(__GNUC__) && defined(__x86_64__)
    static const auto widest = __builtin_cpu_supports("avx512f") ? sum_avx512
                               : __builtin_cpu_supports("avx2")  ? sum_avx2
                                                                 : sum_baseline;
    return widest(x, n);
#else
    return sum_baseline(x, n);
#endif
  }

  // Sixty-four independent partial sums: the compiler vectorizes them without reassociating one sum, into
  // enough accumulators (16 SSE, 8 AVX2 or 4 AVX-512 registers) that the loop waits on memory, not on the
  // latency of the adds. The chunk is read as kStreams streams in lockstep, as a GEMV reads several rows:
  // one stream alone leaves a Zen 1 core at ~12.5 GB/s, where its f32 GEMV reads ~16 GB/s.
  static constexpr std::size_t kStreams = 4;
  [[gnu::always_inline]] static float sum_partials(const float* x, std::size_t n) {
    constexpr std::size_t kPerStream = 64 / kStreams;
    std::array<float, 64> partial{};
    const std::size_t stride = n / kStreams / kPerStream * kPerStream;  // floats per stream
    for (std::size_t i = 0; i < stride; i += kPerStream) {
      for (std::size_t s = 0; s < kStreams; ++s) {
        for (std::size_t j = 0; j < kPerStream; ++j) partial[s * kPerStream + j] += x[s * stride + i + j];
      }
    }
    for (std::size_t i = kStreams * stride; i < n; ++i) partial[0] += x[i];
    float total = 0.0f;
    for (float p : partial) total += p;
    return total;
  }
  static float sum_baseline(const float* x, std::size_t n) { return sum_partials(x, n); }
#if defined(__GNUC__) && defined(__x86_64__)
  [[gnu::target("avx2")]] static float sum_avx2(const float* x, std::size_t n) { return sum_partials(x, n); }
  [[gnu::target("avx512f")]] static float sum_avx512(const float* x, std::size_t n) { return sum_partials(x, n); }
#endif
};

// ---- Results ----

// The "min" statistic over repetitions (Google Benchmark computes mean, median and stddev itself).
inline double min_of(const std::vector<double>& values) { return *std::min_element(values.begin(), values.end()); }

struct Measurement {
  double median_seconds = 0.0;
  double min_seconds = 0.0;
  double bytes_per_second = 0.0;                  // the median over repetitions
  std::map<std::string, double> median_counters;  // each user counter's median over repetitions
  std::map<std::string, double> min_counters;     // and its minimum
};

// Passes every run on to the display reporter the flags chose and keeps each benchmark's median and
// minimum (the aggregates; with a single repetition, the run itself) for the summary table.
class SummaryReporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context& context) override { return display_.ReportContext(context); }
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) record(run);
    display_.ReportRuns(runs);
  }
  void Finalize() override { display_.Finalize(); }

  const std::map<std::string, Measurement>& results() const { return results_; }

 private:
  void record(const Run& run) {
    if (run.error_occurred) return;
    const bool single = run.run_type == Run::RT_Iteration && run.repetitions <= 1;
    const double seconds = run.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(run.time_unit);
    Measurement& m = results_[run.run_name.function_name];
    if (single || run.aggregate_name == "median") {
      m.median_seconds = seconds;
      if (auto it = run.counters.find("bytes_per_second"); it != run.counters.end()) {
        m.bytes_per_second = it->second.value;
      }
      for (const auto& [name, counter] : run.counters) m.median_counters[name] = counter.value;
    }
    if (single || run.aggregate_name == "min") {
      m.min_seconds = seconds;
      for (const auto& [name, counter] : run.counters) m.min_counters[name] = counter.value;
    }
  }

  // Made by the library from --benchmark_format (after Initialize) and owned by it.
  benchmark::BenchmarkReporter& display_ = *benchmark::CreateDefaultDisplayReporter();
  std::map<std::string, Measurement> results_;
};

inline std::string format_time(double seconds) {
  if (seconds < 1e-6) return fmt::format("{:.1f} ns", seconds * 1e9);
  if (seconds < 1e-3) return fmt::format("{:.2f} µs", seconds * 1e6);
  if (seconds < 1.0) return fmt::format("{:.2f} ms", seconds * 1e3);
  return fmt::format("{:.2f} s", seconds);
}

// ---- Command line ----

// argv plus each of `defaults` ("--flag=value") whose flag the command line does not set, in the form
// benchmark::Initialize takes (which removes the flags it knows from it).
class Arguments {
 public:
  Arguments(int argc, char** argv, std::initializer_list<std::string_view> defaults) : args_(argv, argv + argc) {
    for (std::string_view flag : defaults) {
      const std::string_view key = flag.substr(0, flag.find('=') + 1);
      if (std::none_of(args_.begin() + 1, args_.end(), [&](const std::string& a) { return a.starts_with(key); })) {
        args_.emplace_back(flag);
      }
    }
    for (std::string& a : args_) pointers_.push_back(a.data());
    pointers_.push_back(nullptr);
    count_ = static_cast<int>(args_.size());
  }
  Arguments(const Arguments&) = delete;
  Arguments& operator=(const Arguments&) = delete;

  int* count() noexcept { return &count_; }
  char** values() noexcept { return pointers_.data(); }

  // The value of "--flag=value" as the command line (or a default) set it; empty if neither did.
  std::string value_of(std::string_view flag) const {
    const std::string key = fmt::format("{}=", flag);
    std::string value;  // the last one counts, as in Google Benchmark
    for (const std::string& a : args_) {
      if (a.starts_with(key)) value = a.substr(key.size());
    }
    return value;
  }

 private:
  std::vector<std::string> args_;
  std::vector<char*> pointers_;
  int count_ = 0;
};

// A manual-time case's measurement by its registered name; null when the filter left it out.
inline const Measurement* find_result(const std::map<std::string, Measurement>& results, const std::string& name) {
  for (const std::string& key : {name + "/manual_time", name}) {
    if (const auto it = results.find(key); it != results.end()) return &it->second;
  }
  return nullptr;
}

// The read probe over 256 MiB on `thread_count` threads, timed per pass: the roofline
// case the LoRA and MoE benchmarks register next to their own.
inline void run_read_probe(benchmark::State& state, int thread_count) {
  ScopedNumThreads threads(thread_count);
  Stream stream(StreamKernel::read, 64ull << 20);
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    stream.run();
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  state.SetBytesProcessed(stream.bytes() * static_cast<std::int64_t>(state.iterations()));
}

// Times each iteration of body() for a manual-time case.
template <class Body>
void timed(benchmark::State& state, Body&& body) {
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    body();
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
}

// Registers a manual-time case in microseconds that also reports the minimum over repetitions.
template <class Body>
void add_case(const std::string& name, Body&& body) {
  benchmark::RegisterBenchmark(name.c_str(), std::forward<Body>(body))
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond)
      ->ComputeStatistics("min", min_of);
}

// main() of a benchmark binary: its default flags (the command line wins), its cases, its summary.
template <class Register, class Summarize>
int run_benchmarks(int argc, char** argv, std::initializer_list<std::string_view> defaults, Register&& register_cases,
                   Summarize&& summarize) {
  Arguments args(argc, argv, defaults);
  benchmark::Initialize(args.count(), args.values());
  if (benchmark::ReportUnrecognizedArguments(*args.count(), args.values())) return 1;
  register_cases();
  SummaryReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  summarize(reporter.results());
  return 0;
}

}  // namespace persona::bench
