// Tokenizers: encode throughput (MB of text per second, 1 thread) of each fixture tokenizer on the
// corpus of tests/data/text, against Hugging Face tokenizers encoding the same corpus in the same run
// (tools/bench_tokenizers_peer.py under $PERSONA_BENCH_PYTHON, e.g. /work/modelenv/bin/python; skipped
// with a note when unset). Also decoding and 2 threads (encode_batch).
//
// Cases (manual time, medians over repetitions):
//   encode/<tokenizer>[/threads:2]   every corpus entry encoded (special tokens, no truncation or padding)
//   decode/<tokenizer>               every entry's ids decoded
//   peer/<tokenizer>                 tokenizers' encode_batch on 1 thread, timed by the Python script
#include "bench_support.hpp"

#include <persona/persona.hpp>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>

namespace persona {
namespace {

const std::filesystem::path kText = PERSONA_SOURCE_DIR "/tests/data/text";
const std::vector<std::string> kTokenizers{"llama3_bpe", "metaspace_bpe", "spm_llama", "minilm"};

const std::vector<std::string>& corpus() {
  static const std::vector<std::string> lines = [] {
    std::ifstream in(kText / "corpus.json");
    return nlohmann::json::parse(in).get<std::vector<std::string>>();
  }();
  return lines;
}

std::size_t corpus_bytes() {
  std::size_t n = 0;
  for (const std::string& line : corpus()) n += line.size();
  return n;
}

constexpr EncodeOptions kOptions{.add_special_tokens = true, .truncate = false, .pad = false};

void encode_case(benchmark::State& state, const std::string& name, int threads) {
  ScopedNumThreads limit(threads);
  const Tokenizer tokenizer = Tokenizer::load(kText / name);
  bench::timed(state, [&] {
    if (threads == 1) {
      for (const std::string& line : corpus()) benchmark::DoNotOptimize(tokenizer.encode(line, kOptions).data());
    } else {
      benchmark::DoNotOptimize(tokenizer.encode_batch(corpus(), kOptions).data());
    }
  });
  state.SetBytesProcessed(static_cast<std::int64_t>(corpus_bytes()) * state.iterations());
}

void decode_case(benchmark::State& state, const std::string& name) {
  const Tokenizer tokenizer = Tokenizer::load(kText / name);
  const auto ids = tokenizer.encode_batch(corpus(), kOptions);
  bench::timed(state, [&] {
    for (const auto& sequence : ids) benchmark::DoNotOptimize(tokenizer.decode(sequence).data());
  });
  state.SetBytesProcessed(static_cast<std::int64_t>(corpus_bytes()) * state.iterations());
}

// One iteration = one run of the Python timer (its median of 5 passes).
void peer_case(benchmark::State& state, const std::string& name) {
  const char* python = std::getenv("PERSONA_BENCH_PYTHON");
  if (python == nullptr) {
    state.SkipWithError("PERSONA_BENCH_PYTHON is not set (a python with tokenizers 0.23.3)");
    return;
  }
  const std::string command =
      fmt::format("'{}' '{}' '{}' '{}' 5", python, PERSONA_SOURCE_DIR "/tools/bench_tokenizers_peer.py",
                  (kText / name / "tokenizer.json").string(), (kText / "corpus.json").string());
  for (auto _ : state) {
    FILE* pipe = popen(command.c_str(), "r");
    double seconds = 0;
    const bool read = pipe != nullptr && std::fscanf(pipe, "%lf", &seconds) == 1;
    if (pipe != nullptr) pclose(pipe);
    if (!read || seconds <= 0) {
      state.SkipWithError("the tokenizers peer did not run");
      return;
    }
    state.SetIterationTime(seconds);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(corpus_bytes()) * state.iterations());
}

void register_benchmarks() {
  for (const std::string& name : kTokenizers) {
    bench::add_case("encode/" + name, [name](benchmark::State& s) { encode_case(s, name, 1); });
    bench::add_case("encode/" + name + "/threads:2", [name](benchmark::State& s) { encode_case(s, name, 2); });
    bench::add_case("decode/" + name, [name](benchmark::State& s) { decode_case(s, name); });
    benchmark::RegisterBenchmark(("peer/" + name).c_str(), [name](benchmark::State& s) { peer_case(s, name); })
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond)
        ->Iterations(1)
        ->ComputeStatistics("min", bench::min_of);
  }
}

void print_summary(const std::map<std::string, bench::Measurement>& results) {
  fmt::print("\n## bench_text ({} corpus entries, {:.1f} KB)\n\n", corpus().size(),
             static_cast<double>(corpus_bytes()) / 1e3);
  fmt::print("| tokenizer | persona encode MB/s | 2 threads | tokenizers MB/s (1 thread) | ratio | decode MB/s |\n");
  fmt::print("|---|---|---|---|---|---|\n");
  for (const std::string& name : kTokenizers) {
    const auto* mine = bench::find_result(results, "encode/" + name);
    const auto* two = bench::find_result(results, "encode/" + name + "/threads:2");
    const auto* peer = bench::find_result(results, "peer/" + name);
    const auto* decode = bench::find_result(results, "decode/" + name);
    const auto mbs = [](const bench::Measurement* m) {
      return m ? fmt::format("{:.1f}", m->bytes_per_second / 1e6) : std::string();
    };
    const std::string ratio = mine && peer && peer->bytes_per_second > 0
                                  ? fmt::format("{:.2f}x", mine->bytes_per_second / peer->bytes_per_second)
                                  : "";
    fmt::print("| {} | {} | {} | {} | {} | {} |\n", name, mbs(mine), mbs(two), mbs(peer), ratio, mbs(decode));
  }
  fmt::print("\nTarget: encode on 1 thread >= 1x tokenizers' on 1 thread.\n");
}

}  // namespace
}  // namespace persona

int main(int argc, char** argv) {
  return persona::bench::run_benchmarks(
      argc, argv, {"--benchmark_repetitions=5", "--benchmark_min_time=0.2", "--benchmark_display_aggregates_only=true"},
      persona::register_benchmarks, persona::print_summary);
}
