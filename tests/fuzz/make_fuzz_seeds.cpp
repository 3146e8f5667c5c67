// Writes the seed files of the persona adapter and HNSW index fuzz targets (made anew by scripts/test.sh,
// so that the seeds always have the current formats): make_fuzz_seeds <folder>. Each seed is checked to
// load back as written: a seed the reader refuses would start the fuzzer at the front door only.
#include "fuzz_check.hpp"

#include <persona/ann/hnsw_index.hpp>
#include <persona/io/persona_adapter.hpp>
#include <persona/quant/quantize.hpp>

#include <filesystem>
#include <random>
#include <vector>

using namespace persona;

namespace {

Tensor<float> random_matrix(std::size_t rows, std::size_t cols, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Tensor<float> t({rows, cols});
  for (float& v : t.span()) v = normal(rng);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::filesystem::path folder = argv[1];
  std::filesystem::create_directories(folder / "persona_adapter");
  std::filesystem::create_directories(folder / "hnsw_index");
  LoraAdapter adapter("style", 7);
  adapter.add({0, "q_proj"}, LoraModule(LoraMatrix(quantize(random_matrix(4, 32, 1), {4, 32, false, DType::bf16})),
                                        LoraMatrix(random_matrix(16, 4, 2)), 8.0f));
  adapter.add({1, "v_proj"}, LoraModule(LoraMatrix(quantize(random_matrix(4, 32, 3), QuantSpec::nf4(32))),
                                        LoraMatrix(random_matrix(16, 4, 4)), 4.0f, LoraScaling::rank_stabilized));
  write_persona_adapter(adapter, folder / "persona_adapter" / "int4_nf4.persona");
  const LoraAdapter back = read_persona_adapter(folder / "persona_adapter" / "int4_nf4.persona");
  PERSONA_FUZZ_CHECK(back.modules().size() == 2 && back.find(1, "v_proj")->scaling() == LoraScaling::rank_stabilized);
  LoraAdapter plain("plain", kPublicTenant);
  plain.add({2, "o_proj"}, LoraModule(LoraMatrix(random_matrix(2, 8, 5)), LoraMatrix(random_matrix(8, 2, 6)), 2.0f));
  write_persona_adapter(plain, folder / "persona_adapter" / "f32.persona");
  write_persona_adapter(plain, folder / "persona_adapter" / "bf16.persona", DType::bf16);
  for (const char* name : {"f32.persona", "bf16.persona"}) {
    PERSONA_FUZZ_CHECK(read_persona_adapter(folder / "persona_adapter" / name).find(2, "o_proj")->alpha() == 2.0f);
  }
  for (const VectorStorage storage : {VectorStorage::f32, VectorStorage::int8}) {
    HnswIndex index({.dim = 4, .M = 4, .exact_search_limit = 8, .storage = storage});
    const Tensor<float> points = random_matrix(40, 4, 7);
    for (std::size_t i = 0; i < 40; ++i) index.add(i, points.span().subspan(4 * i, 4), i % 3);
    index.remove(5, 2);
    const auto path = folder / "hnsw_index" / (storage == VectorStorage::f32 ? "f32.hnsw" : "int8.hnsw");
    index.save(path);
    const HnswIndex loaded = HnswIndex::load(path);
    PERSONA_FUZZ_CHECK(loaded.size() == 39 && !loaded.contains(5, 2) && loaded.contains(6, 0));
  }
  return 0;
}
