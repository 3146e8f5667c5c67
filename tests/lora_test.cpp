// Tests of the lora component: batch plans, many adapters (mixed ranks and formats) in one batch against
// a per-token f64 reference, both apply forms, thread counts, merge / unmerge, and bad input.
#include "allocation_counter.hpp"
#include "test_support.hpp"

#include <persona/core/ops.hpp>
#include <persona/lora/lora_apply.hpp>
#include <persona/lora/lora_quantize.hpp>
#include <persona/quant/quantize.hpp>

#include <atomic>
#include <new>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

using namespace persona;
using persona::test::CountAllocations;
using persona::test::for_each_level_and_threads;
using persona::test::random_tensor;

namespace {

constexpr std::size_t kIn = 128, kOut = 96;

LoraMatrix make_matrix(std::size_t rows, std::size_t cols, std::uint32_t seed, const QuantSpec* spec) {
  Tensor<float> w = random_tensor({rows, cols}, seed, 0.2f);
  if (spec == nullptr) return LoraMatrix(std::move(w));
  return LoraMatrix(quantize(w, *spec));
}

// Modules with ranks 1..64 and every storage format. B's quantization groups run along its columns (the
// rank): ranks 8, 16 and 24 use groups of 8 and 16 (one group per row takes the short-row kernel).
std::vector<std::unique_ptr<LoraModule>> mixed_modules() {
  const QuantSpec int8{8, 32, true}, int4{4, 32, false}, int2{2, 64, true}, nf4 = QuantSpec::nf4(64);
  const QuantSpec int4_g8{4, 8, true}, nf4_g16 = QuantSpec::nf4(16), int8_g8{8, 8, false}, int2_g16{2, 16, true};
  struct Recipe {
    std::size_t rank;
    const QuantSpec* a;
    const QuantSpec* b;
    LoraScaling scaling;
  };
  const std::vector<Recipe> recipes = {
      {1, nullptr, nullptr, LoraScaling::standard},     {3, &int8, nullptr, LoraScaling::rank_stabilized},
      {8, &int4, &int4_g8, LoraScaling::standard},      {16, &nf4, &nf4_g16, LoraScaling::standard},
      {24, &int8, &int8_g8, LoraScaling::standard},     {16, &int4, &int2_g16, LoraScaling::standard},
      {32, &int4, &int4, LoraScaling::rank_stabilized}, {64, &int8, &int8, LoraScaling::standard},
      {64, &int2, &nf4, LoraScaling::standard},         {8, &int4, nullptr, LoraScaling::standard}};
  std::vector<std::unique_ptr<LoraModule>> modules;
  std::uint32_t seed = 100;
  for (const Recipe& r : recipes) {
    modules.push_back(std::make_unique<LoraModule>(make_matrix(r.rank, kIn, seed, r.a),
                                                   make_matrix(kOut, r.rank, seed + 1, r.b), 16.0f, r.scaling));
    seed += 2;
  }
  return modules;
}

// |y - y_ref| for one token and output, from the int8 quantization of x (shrink) and of h (expand):
// each activation moves by at most half a step, absmax / 254, and 1/127 bounds it with room for the
// rounding of the f32 sums.
double error_bound(const LoraModule& m, TensorView<const float> x, std::size_t t, std::size_t o) {
  const Tensor<float> a = m.a().to_f32(), b = m.b().to_f32();
  double amax_x = 0.0;
  for (std::size_t c = 0; c < x.dim(1); ++c) amax_x = std::max(amax_x, std::fabs(static_cast<double>(x(t, c))));
  std::vector<double> h(m.rank()), h_abs(m.rank());
  double amax_h = 0.0, shrink_error = 0.0;
  for (std::size_t r = 0; r < m.rank(); ++r) {
    double sum = 0.0, abs_sum = 0.0, a_abs = 0.0;
    for (std::size_t c = 0; c < x.dim(1); ++c) {
      sum += static_cast<double>(a(r, c)) * x(t, c);
      abs_sum += std::fabs(static_cast<double>(a(r, c)) * x(t, c));
      a_abs += std::fabs(a(r, c));
    }
    h[r] = sum;
    h_abs[r] = abs_sum;
    amax_h = std::max(amax_h, std::fabs(sum));
    const double e = (m.a().quantized() ? a_abs * amax_x / 127.0 : 0.0) + 1e-5 * abs_sum;
    shrink_error = std::max(shrink_error, e);
  }
  double bound = 0.0;
  for (std::size_t r = 0; r < m.rank(); ++r) {
    const double bb = std::fabs(b(o, r));
    bound += bb * (shrink_error + (m.b().quantized() ? (amax_h + shrink_error) / 127.0 : 0.0) + 1e-5 * h_abs[r]);
  }
  return static_cast<double>(m.scale()) * bound + 1e-6;
}

bool same_bits(const Tensor<float>& a, const Tensor<float>& b) {
  return a.shape() == b.shape() && (a.empty() || std::memcmp(a.data(), b.data(), a.numel() * sizeof(float)) == 0);
}

}  // namespace

TEST_CASE("plan_lora_batch groups tokens by slot, stably", "[lora]") {
  const std::vector<std::int32_t> slots = {2, kNoLora, 0, 2, 2, 0, kNoLora};
  const LoraBatchPlan plan = plan_lora_batch(slots, 4);
  CHECK(plan.token_count == 7);
  CHECK(plan.tokens == std::vector<std::size_t>{2, 5, 0, 3, 4});
  REQUIRE(plan.segments.size() == 2);
  CHECK(plan.segments[0].slot == 0);
  CHECK(plan.segments[0].end - plan.segments[0].begin == 2);
  CHECK(plan.segments[1].slot == 2);
  CHECK(plan.max_segment_tokens == 3);
  CHECK(plan.token_slots == std::vector<std::int32_t>{0, 0, 2, 2, 2});
  CHECK(plan_lora_batch({}, 3).segments.empty());
  // Segments are cut into chunks of kLoraChunkTokens for the segment form: 40 tokens on slot 1 and 3 on
  // slot 0 give chunks of 3, 16, 16 and 8.
  std::vector<std::int32_t> long_run(40, 1);
  long_run.insert(long_run.begin() + 5, 3, 0);
  const LoraBatchPlan chunked = plan_lora_batch(long_run, 2);
  REQUIRE(chunked.chunks.size() == 4);
  CHECK(chunked.chunks[0].slot == 0);
  CHECK(chunked.chunks[0].end - chunked.chunks[0].begin == 3);
  for (std::size_t i = 1; i < 4; ++i) {
    CHECK(chunked.chunks[i].slot == 1);
    CHECK(chunked.chunks[i].begin == chunked.chunks[i - 1].end);
  }
  CHECK(chunked.chunks[3].end - chunked.chunks[3].begin == 40 - 2 * kLoraChunkTokens);
  const std::vector<std::int32_t> bad = {0, 4};
  PERSONA_REQUIRE_ERROR(plan_lora_batch(bad, 4), out_of_range, "token 1 has slot 4");
}

TEST_CASE("plan_lora_batch into a kept plan: the same plan, slot offsets, no allocation once reserved", "[lora]") {
  const std::vector<std::int32_t> first = {2, kNoLora, 0, 2, 2, 0, kNoLora};
  std::vector<std::int32_t> second(40, 1);
  second.insert(second.begin() + 5, 3, 0);
  LoraBatchPlan kept;
  kept.reserve(43, 4);
  for (const std::vector<std::int32_t>* slots : {&first, &std::as_const(second), &first}) {
    {
      CountAllocations counter;
      plan_lora_batch(*slots, 4, kept);
      CHECK(counter.count() == 0);
    }
    const LoraBatchPlan fresh = plan_lora_batch(*slots, 4);
    CHECK(kept.token_count == fresh.token_count);
    CHECK(kept.tokens == fresh.tokens);
    CHECK(kept.token_slots == fresh.token_slots);
    CHECK(kept.max_segment_tokens == fresh.max_segment_tokens);
    REQUIRE(kept.segments.size() == fresh.segments.size());
    for (std::size_t i = 0; i < kept.segments.size(); ++i) {
      CHECK(kept.segments[i].slot == fresh.segments[i].slot);
      CHECK(kept.segments[i].begin == fresh.segments[i].begin);
      CHECK(kept.segments[i].end == fresh.segments[i].end);
    }
    CHECK(kept.chunks.size() == fresh.chunks.size());
    // Slot s's entries are tokens[slot_offsets[s], slot_offsets[s + 1]).
    REQUIRE(kept.slot_offsets.size() == 5);
    for (std::size_t s = 0; s < 4; ++s) {
      for (std::size_t i = kept.slot_offsets[s]; i < kept.slot_offsets[s + 1]; ++i) {
        CHECK(kept.token_slots[i] == static_cast<std::int32_t>(s));
      }
    }
    CHECK(kept.slot_offsets[4] == kept.tokens.size());
  }
}

TEST_CASE("LoRA modules: scaling and shape checks", "[lora]") {
  LoraModule lora(make_matrix(8, kIn, 1, nullptr), make_matrix(kOut, 8, 2, nullptr), 16.0f);
  CHECK(lora.scale() == 2.0f);
  LoraModule rs(make_matrix(16, kIn, 1, nullptr), make_matrix(kOut, 16, 2, nullptr), 16.0f,
                LoraScaling::rank_stabilized);
  CHECK(rs.scale() == 4.0f);
  CHECK(rs.bytes() == (16 * kIn + kOut * 16) * sizeof(float));
  PERSONA_REQUIRE_ERROR(LoraModule(make_matrix(8, kIn, 1, nullptr), make_matrix(kOut, 4, 2, nullptr), 8.0f),
                        shape_mismatch, "B needs 8 columns");
  PERSONA_REQUIRE_ERROR(LoraMatrix(Tensor<float>({4})), shape_mismatch, "rank 2");
  const QuantSpec spec{4, 32, true};
  CHECK(make_matrix(4, kIn, 3, &spec).format() == "int4 g32 sym f16");
}

TEST_CASE("Mixed batches match the per-token reference", "[lora]") {
  const auto owned = mixed_modules();
  std::vector<const LoraModule*> slots;
  for (const auto& m : owned) slots.push_back(m.get());
  const std::size_t n = slots.size();
  struct Batch {
    const char* name;
    std::vector<std::int32_t> token_slots;
  };
  std::vector<Batch> batches = {{"no tokens", {}},
                                {"one token", {4}},
                                {"all on one adapter", std::vector<std::int32_t>(9, 5)},
                                {"no adapter at all", std::vector<std::int32_t>(3, kNoLora)},
                                {"every token its own", {}},
                                {"mixed with gaps", {}}};
  for (std::size_t s = 0; s < n; ++s) batches[4].token_slots.push_back(static_cast<std::int32_t>(s));
  for (std::size_t t = 0; t < 40; ++t) {
    batches[5].token_slots.push_back(t % 5 == 0 ? kNoLora : static_cast<std::int32_t>((t * 7) % n));
  }
  for_each_level_and_threads([&](IsaLevel, int threads) {
    for (const Batch& batch : batches) {
      const std::size_t tokens = batch.token_slots.size();
      const Tensor<float> x = random_tensor({tokens, kIn}, 7);
      const Tensor<float> y0 = random_tensor({tokens, kOut}, 8);  // apply adds to what is there
      const LoraBatchPlan plan = plan_lora_batch(batch.token_slots, n);
      Tensor<float> ref = y0;
      apply_lora_ref(x, ref, slots, batch.token_slots);
      LoraWorkspace workspace;  // shared by every form: a reused workspace must not change results
      for (LoraForm form : {LoraForm::segment, LoraForm::gather, LoraForm::automatic}) {
        INFO(batch.name << ", form " << static_cast<int>(form));
        Tensor<float> y = y0;
        apply_lora(x, y, slots, plan, workspace, form);
        for (std::size_t t = 0; t < tokens; ++t) {
          const std::int32_t s = batch.token_slots[t];
          for (std::size_t o = 0; o < kOut; ++o) {
            if (s == kNoLora) {
              REQUIRE(y(t, o) == y0(t, o));  // untouched
              continue;
            }
            const double bound = error_bound(*slots[static_cast<std::size_t>(s)], x, t, o);
            if (!(std::fabs(y(t, o) - ref(t, o)) <= bound)) {
              FAIL("token " << t << " (slot " << s << ") output " << o << ": " << y(t, o) << " vs reference "
                            << ref(t, o) << ", bound " << bound);
            }
          }
        }
        if (threads > 1) {
          Tensor<float> single = y0;
          ScopedNumThreads one(1);
          apply_lora(x, single, slots, plan, form);
          CHECK(same_bits(y, single));
        }
      }
    }
  });
}

TEST_CASE("Merging then unmerging restores W, and merged W equals base plus LoRA", "[lora]") {
  const auto owned = mixed_modules();
  for (const auto& module : owned) {
    INFO("rank " << module->rank() << ", A " << module->a().format() << ", B " << module->b().format());
    const Tensor<float> w0 = random_tensor({kOut, kIn}, 9);
    Tensor<float> w = w0;
    merge_lora(w, *module);
    // Merged: x W'^T equals x W^T + LoRA(x) up to f32 rounding of the same sums (f32 weights, so the
    // LoRA here is the reference one).
    const Tensor<float> x = random_tensor({3, kIn}, 10);
    Tensor<float> merged({3, kOut}), unmerged({3, kOut});
    matmul_ref(x, w, merged, Transpose::yes);
    matmul_ref(x, w0, unmerged, Transpose::yes);
    const std::vector<std::int32_t> token_slots(3, 0);
    const LoraModule* slot = module.get();
    apply_lora_ref(x, unmerged, std::span(&slot, 1), token_slots);
    for (std::size_t i = 0; i < merged.numel(); ++i) {
      REQUIRE(merged.data()[i] == Approx(unmerged.data()[i]).margin(1e-4).epsilon(1e-5));
    }
    unmerge_lora(w, *module);
    // w + d - d differs from w by at most one rounding of each step: 2^-23 (|w| + 2 |d|) with |d| the
    // delta, bounded here by |w' - w0| + |w0|.
    for (std::size_t i = 0; i < w.numel(); ++i) {
      const double bound = 0x1p-22 * (std::fabs(w0.data()[i]) + 2.0 * std::fabs(w.data()[i] - w0.data()[i]) + 1.0);
      REQUIRE(std::fabs(w.data()[i] - w0.data()[i]) <= bound);
    }
  }
  Tensor<float> wrong({kOut, kIn + 1});
  PERSONA_REQUIRE_ERROR(merge_lora(wrong, *owned[0]), shape_mismatch, "[96, 129]");
}

TEST_CASE("lora_linear is the base product plus the adapters", "[lora]") {
  const auto owned = mixed_modules();
  std::vector<const LoraModule*> slots;
  for (const auto& m : owned) slots.push_back(m.get());
  const std::vector<std::int32_t> token_slots = {1, kNoLora, 4, 4};
  const Tensor<float> x = random_tensor({4, kIn}, 11);
  const QuantSpec int4{4, 64, true};
  for (const LoraMatrix& base : {make_matrix(kOut, kIn, 12, nullptr), make_matrix(kOut, kIn, 12, &int4)}) {
    const LoraBatchPlan plan = plan_lora_batch(token_slots, slots.size());
    Tensor<float> fused({4, kOut}), separate({4, kOut});
    std::fill(fused.span().begin(), fused.span().end(), 7.0f);  // overwritten
    lora_linear(x, base, fused, slots, plan);
    base.multiply(x, separate);
    apply_lora(x, separate, slots, plan);
    CHECK(same_bits(fused, separate));
  }
}

TEST_CASE("apply_lora rejects mismatched shapes, plans and slots", "[lora]") {
  const auto owned = mixed_modules();
  std::vector<const LoraModule*> slots = {owned[0].get(), nullptr};
  const Tensor<float> x = random_tensor({2, kIn}, 13);
  Tensor<float> y({2, kOut});
  const std::vector<std::int32_t> uses_empty = {0, 1};
  PERSONA_REQUIRE_ERROR(apply_lora(x, y, slots, plan_lora_batch(uses_empty, 2)), invalid_argument,
                        "slot 1 has tokens but no module");
  const std::vector<std::int32_t> ok = {0, 0};
  PERSONA_REQUIRE_ERROR(apply_lora(x, y, slots, plan_lora_batch(std::span(ok).first(1), 2)), shape_mismatch,
                        "plan is for 1 tokens but x has 2");
  Tensor<float> y_wrong({2, kOut + 1});
  PERSONA_REQUIRE_ERROR(apply_lora(x, y_wrong, slots, plan_lora_batch(ok, 2)), shape_mismatch,
                        "slot 0: the module is [out 96, in 128]");
}

TEST_CASE("quantize_lora picks B's group from the rank and keeps DoRA magnitudes", "[lora]") {
  const QuantSpec int4{4, 32, true}, int2{2, 32, true};
  struct Expect {
    std::size_t rank;
    const QuantSpec& spec;
    std::size_t b_group;  // 0: B stays f32
  };
  for (const Expect& e : {Expect{1, int4, 0}, Expect{4, int4, 0}, Expect{8, int4, 8}, Expect{16, int4, 16},
                          Expect{24, int4, 8}, Expect{64, int4, 32}, Expect{8, int2, 0}, Expect{16, int2, 16}}) {
    INFO("rank " << e.rank << ", " << e.spec.to_string());
    Tensor<float> magnitude = random_tensor({kOut}, 20);
    const LoraModule module(make_matrix(e.rank, kIn, 21, nullptr), make_matrix(kOut, e.rank, 22, nullptr), 8.0f,
                            LoraScaling::rank_stabilized, magnitude);
    LoraQuantReport report;
    const LoraModule q = quantize_lora(module, e.spec, QuantMethod::round_to_nearest, &report);
    REQUIRE(report.a_spec.has_value());
    CHECK(report.a_spec->group_size == 32);
    CHECK(q.a().quantized());
    CHECK(q.b().quantized() == (e.b_group != 0));
    CHECK(report.b_spec.has_value() == (e.b_group != 0));
    if (e.b_group != 0) {
      CHECK(q.b().quantized_matrix()->spec().group_size == e.b_group);
      CHECK(report.b.snr_db > (e.spec.bits == 4 ? 15.0 : 5.0));
    }
    CHECK(report.a.rmse > 0.0);
    CHECK(q.scale() == module.scale());
    CHECK(q.scaling() == LoraScaling::rank_stabilized);
    REQUIRE(q.dora());
    CHECK(std::memcmp(q.dora_magnitude().data(), magnitude.data(), kOut * sizeof(float)) == 0);
  }
  PERSONA_REQUIRE_ERROR(quantize_lora(*mixed_modules()[0], QuantSpec{4, 48}), invalid_argument, "group_size is 48");
}

TEST_CASE("A reserved workspace makes apply_lora allocation-free", "[lora]") {
  const auto owned = mixed_modules();
  std::vector<const LoraModule*> slots;
  std::size_t max_rank = 0;
  for (const auto& m : owned) {
    slots.push_back(m.get());
    max_rank = std::max(max_rank, m->rank());
  }
  std::vector<std::int32_t> token_slots;
  for (std::size_t t = 0; t < 37; ++t) token_slots.push_back(static_cast<std::int32_t>((t * 5) % slots.size()));
  const Tensor<float> x = random_tensor({token_slots.size(), kIn}, 30);
  const LoraBatchPlan plan = plan_lora_batch(token_slots, slots.size());
  ScopedNumThreads one(1);
  LoraWorkspace workspace;
  workspace.reserve(kIn, kOut, max_rank);
  CHECK(workspace.bytes() > 0);
  for (LoraForm form : {LoraForm::segment, LoraForm::gather}) {
    Tensor<float> y({token_slots.size(), kOut}), fresh({token_slots.size(), kOut});
    {
      CountAllocations counter;
      apply_lora(x, y, slots, plan, workspace, form);
      CHECK(counter.count() == 0);
    }
    apply_lora(x, fresh, slots, plan, form);  // its own workspace: the same result
    CHECK(same_bits(y, fresh));
  }
  // The counter works: the convenience overload makes a workspace of its own.
  Tensor<float> y({token_slots.size(), kOut});
  CountAllocations counter;
  apply_lora(x, y, slots, plan);
  CHECK(counter.count() > 0);
}

TEST_CASE("Quantized adapters: a token's bits do not depend on the rest of the batch", "[lora]") {
  const QuantSpec int4{4, 32, true}, int4_g16{4, 16, true};
  const LoraModule m(make_matrix(16, kIn, 40, &int4), make_matrix(kOut, 16, 41, &int4_g16), 32.0f);
  const LoraModule* slot = &m;
  const Tensor<float> x = random_tensor({5, kIn}, 42);
  const Tensor<float> y0 = random_tensor({5, kOut}, 43);
  // Token 0 with its slot's tokens consecutive (0, 1, 2), spread out (0, 2, 4), alone, in both forms.
  const std::vector<std::vector<std::int32_t>> batches = {
      {0, 0, 0, kNoLora, kNoLora}, {0, kNoLora, 0, kNoLora, 0}, {0, kNoLora, kNoLora, kNoLora, kNoLora}};
  std::vector<float> first;
  for (const auto& token_slots : batches) {
    for (LoraForm form : {LoraForm::segment, LoraForm::gather}) {
      Tensor<float> y = y0;
      apply_lora(x, y, std::span(&slot, 1), plan_lora_batch(token_slots, 1), form);
      const std::vector<float> row(&y(0, 0), &y(0, 0) + kOut);
      if (first.empty()) first = row;
      CHECK(std::memcmp(row.data(), first.data(), kOut * sizeof(float)) == 0);
    }
  }
}
