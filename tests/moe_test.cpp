// Tests of the moe component: every routing scheme against transformers' own routers (tests/data/moe, from
// tools/make_moe_fixtures.py) and against the scalar reference, ties, thread and batch invariance,
// capacity, per-request masks, expert plans, moe_ffn in every weight format, statistics, and bad input.
#include "test_support.hpp"

#include <persona/io/safetensors.hpp>
#include <persona/moe/expert_plan.hpp>
#include <persona/moe/moe_ffn.hpp>
#include <persona/moe/routing_stats.hpp>
#include <persona/moe/top_k_router.hpp>
#include <persona/quant/quantize.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <set>
#include <vector>

using namespace persona;
using persona::test::for_each_level_and_threads;
using persona::test::random_tensor;

namespace {

const std::filesystem::path kData = PERSONA_TEST_DATA_DIR "/moe";

std::vector<std::int32_t> read_i32(const SafetensorsReader& file, const char* name) {
  const SafetensorsTensor& t = file.tensor(name);
  REQUIRE(t.dtype == SafetensorsDType::I32);
  std::vector<std::int32_t> out(t.numel());
  std::memcpy(out.data(), t.data.data(), out.size() * sizeof(std::int32_t));
  return out;
}

bool same_routing(const Routing& a, const Routing& b) {
  return a.experts == b.experts && a.shared_weights == b.shared_weights &&
         std::memcmp(a.weights.data(), b.weights.data(), a.weights.size() * sizeof(float)) == 0;
}

// Every scheme on E experts and top-k, where the scheme allows it.
std::vector<RouterConfig> schemes(std::size_t E, std::size_t k) {
  std::vector<RouterConfig> out;
  RouterConfig c;
  c.num_experts = E;
  c.top_k = k;
  for (bool renormalize : {false, true}) {
    c.scoring = RouterScoring::softmax;
    c.renormalize = renormalize;
    out.push_back(c);
  }
  c.renormalize = false;
  c.scoring = RouterScoring::topk_then_softmax;
  out.push_back(c);
  c.scoring = RouterScoring::logit_sigmoid;
  out.push_back(c);
  if (E % 8 == 0 && E >= 16 && k <= 4 * (E / 8)) {
    std::vector<float> bias(E);
    for (std::size_t e = 0; e < E; ++e) bias[e] = 0.01f * static_cast<float>((e * 37) % 11) - 0.05f;
    out.push_back(RouterConfig::deepseek_v3(bias, E, k, 8, 4, 2.5f));
    RouterConfig v2 = out.back();
    v2.scoring = RouterScoring::softmax;
    v2.group_score = GroupScore::max;
    v2.selection_bias.clear();
    v2.renormalize = false;
    v2.routed_scaling_factor = 16.0f;
    out.push_back(v2);
  }
  return out;
}

}  // namespace

TEST_CASE("Routers match transformers' Mixtral, Qwen3-MoE, DeepSeek-V3 and Llama 4", "[moe]") {
  struct Case {
    const char* file;
    RouterConfig config;
    bool ordered;  // transformers returns the experts best first
  };
  const SafetensorsReader deepseek = SafetensorsReader::open(kData / "deepseek_v3.safetensors");
  const Tensor<float> bias_tensor = deepseek.read_f32("bias");
  const std::vector<float> bias(bias_tensor.data(), bias_tensor.data() + bias_tensor.numel());
  const std::vector<Case> cases = {{"mixtral", RouterConfig::mixtral(8, 2), true},
                                   {"qwen3_moe", RouterConfig::qwen3_moe(64, 8, true), true},
                                   {"qwen3_moe_unnormalized", RouterConfig::qwen3_moe(64, 8, false), true},
                                   {"deepseek_v3", RouterConfig::deepseek_v3(bias, 256, 8, 8, 4, 2.5f), false},
                                   {"llama4", RouterConfig::llama4(16), true}};
  for (const Case& c : cases) {
    INFO(c.file);
    const SafetensorsReader file = SafetensorsReader::open(kData / (std::string(c.file) + ".safetensors"));
    const Tensor<float> logits = file.read_f32("logits");
    const std::vector<std::int32_t> expected = read_i32(file, "experts");
    const Tensor<float> weights = file.read_f32("weights");
    const TopKRouter router(c.config);
    const std::size_t k = c.config.top_k;
    for (IsaLevel level : supported_isa_levels()) {
      ScopedIsaLevel isa(level);
      for (const Routing& r : {router.route(logits), router.route_ref(logits)}) {
        REQUIRE(r.tokens == logits.dim(0));
        for (std::size_t t = 0; t < r.tokens; ++t) {
          // Order-free comparison (DeepSeek-V3 returns its experts unordered); ours are best first.
          std::vector<std::pair<std::int32_t, float>> ours, theirs;
          for (std::size_t s = 0; s < k; ++s) {
            ours.emplace_back(r.expert(t, s), r.weight(t, s));
            theirs.emplace_back(expected[t * k + s], weights(t, s));
          }
          if (c.ordered) {
            for (std::size_t s = 0; s < k; ++s) CHECK(ours[s].first == theirs[s].first);
          }
          std::sort(ours.begin(), ours.end());
          std::sort(theirs.begin(), theirs.end());
          for (std::size_t s = 0; s < k; ++s) {
            REQUIRE(ours[s].first == theirs[s].first);
            // fp32 softmax / sigmoid and sums: within a few ulps of the weight.
            CHECK(ours[s].second == Approx(theirs[s].second).epsilon(2e-6).margin(1e-7));
          }
        }
      }
    }
  }
}

TEST_CASE("Every scheme agrees with the reference on random logits", "[moe]") {
  for_each_level_and_threads([](IsaLevel, int) {
    for (std::size_t E : {8, 64, 128, 256}) {
      for (std::size_t k : {1, 2, 6, 8}) {
        if (k > E) continue;
        for (const RouterConfig& config : schemes(E, k)) {
          INFO("E " << E << " k " << k << " scoring " << static_cast<int>(config.scoring) << " groups "
                    << config.num_groups);
          const TopKRouter router(config);
          // 4096 tokens for every scheme at one (E, k), to keep the suite short.
          for (std::size_t T :
               {std::size_t{0}, std::size_t{1}, std::size_t{17}, std::size_t{E == 128 && k == 6 ? 4096u : 0u}}) {
            const Tensor<float> logits = random_tensor({T, E}, static_cast<std::uint32_t>(E * 31 + k * 7 + T), 2.0f);
            const Routing fast = router.route(logits), ref = router.route_ref(logits);
            REQUIRE(fast.experts == ref.experts);
            for (std::size_t i = 0; i < fast.weights.size(); ++i) {
              REQUIRE(fast.weights[i] == Approx(ref.weights[i]).epsilon(1e-5).margin(1e-7));
            }
            for (std::size_t t = 0; t < T; ++t) {
              // Distinct experts; renormalized weights sum to the scaling factor.
              std::set<std::int32_t> distinct(fast.experts.begin() + static_cast<std::ptrdiff_t>(t * k),
                                              fast.experts.begin() + static_cast<std::ptrdiff_t>((t + 1) * k));
              REQUIRE(distinct.size() == k);
              if (config.renormalize || config.scoring == RouterScoring::topk_then_softmax) {
                float sum = 0.0f;
                for (std::size_t s = 0; s < k; ++s) sum += fast.weight(t, s);
                REQUIRE(sum == Approx(config.routed_scaling_factor).epsilon(1e-5));
              }
            }
          }
        }
      }
    }
  });
}

TEST_CASE("4096 tokens: batch- and thread-invariant, bit for bit", "[moe]") {
  const std::size_t T = 4096, E = 256;
  const Tensor<float> logits = random_tensor({T, E}, 50, 1.5f);
  std::vector<float> bias(E, 0.0f);
  for (std::size_t e = 0; e < E; e += 3) bias[e] = 0.02f;
  for (const RouterConfig& config : {RouterConfig::deepseek_v3(bias), RouterConfig::qwen3_moe(E, 8, true)}) {
    const TopKRouter router(config);
    Routing two;
    {
      ScopedNumThreads threads(2);
      router.route(logits, two);
    }
    ScopedNumThreads one(1);
    const Routing single = router.route(logits);
    CHECK(same_routing(two, single));
    // Each token routed alone gives the same bits as inside the batch.
    for (std::size_t t = 0; t < T; t += 97) {
      const Routing alone = router.route(logits.view().rows(t, t + 1));
      for (std::size_t s = 0; s < config.top_k; ++s) {
        REQUIRE(alone.expert(0, s) == single.expert(t, s));
        REQUIRE(std::memcmp(&alone.weights[s], &single.weights[t * config.top_k + s], sizeof(float)) == 0);
      }
    }
    const Routing ref = router.route_ref(logits);
    CHECK(ref.experts == single.experts);
  }
}

TEST_CASE("Ties break toward the lower expert index", "[moe]") {
  Tensor<float> logits({3, 8});
  for (std::size_t e = 0; e < 8; ++e) {
    logits(0, e) = 1.0f;                            // all equal: experts 0, 1, 2
    logits(1, e) = e == 5 || e == 2 ? 3.0f : 0.0f;  // a tie at the top: 2 before 5
    logits(2, e) = e >= 4 ? 2.0f : 1.0f;            // four tied for the lead
  }
  for (RouterScoring scoring : {RouterScoring::softmax, RouterScoring::topk_then_softmax, RouterScoring::sigmoid,
                                RouterScoring::logit_sigmoid}) {
    RouterConfig c;
    c.num_experts = 8;
    c.top_k = 3;
    c.scoring = scoring;
    const TopKRouter router(c);
    for (const Routing& r : {router.route(logits), router.route_ref(logits)}) {
      CHECK(std::vector<std::int32_t>(r.experts.begin(), r.experts.begin() + 3) == std::vector<std::int32_t>{0, 1, 2});
      CHECK(std::vector<std::int32_t>(r.experts.begin() + 3, r.experts.begin() + 6) ==
            std::vector<std::int32_t>{2, 5, 0});
      CHECK(std::vector<std::int32_t>(r.experts.begin() + 6, r.experts.end()) == std::vector<std::int32_t>{4, 5, 6});
    }
  }
  // Group-limited: groups {0..3}, {4..7} tie on their top-2 sum; the lower group wins.
  RouterConfig g;
  g.num_experts = 8;
  g.top_k = 2;
  g.scoring = RouterScoring::sigmoid;
  g.num_groups = 2;
  g.topk_groups = 1;
  Tensor<float> same({1, 8});
  for (std::size_t e = 0; e < 8; ++e) same(0, e) = e % 4 == 1 ? 2.0f : 0.5f;
  const Routing r = TopKRouter(g).route(same);
  CHECK(r.experts == std::vector<std::int32_t>{1, 0});
}

TEST_CASE("Group-limited selection keeps to the best groups", "[moe]") {
  // 4 groups of 4; group 2 holds the single best expert but its second is poor, group 1 is strong overall.
  Tensor<float> logits({1, 16});
  const float values[16] = {0.1f, 0.1f, 0.1f, 0.1f, 2.0f, 1.9f, 0.0f, 0.0f,
                            3.0f, -5.f, -5.f, -5.f, 0.5f, 0.4f, 0.f,  0.f};
  std::copy_n(values, 16, logits.data());
  RouterConfig sum2;
  sum2.num_experts = 16;
  sum2.top_k = 2;
  sum2.scoring = RouterScoring::sigmoid;
  sum2.num_groups = 4;
  sum2.topk_groups = 1;
  CHECK(TopKRouter(sum2).route(logits).experts == std::vector<std::int32_t>{4, 5});
  RouterConfig by_max = sum2;
  by_max.group_score = GroupScore::max;
  CHECK(TopKRouter(by_max).route(logits).experts == std::vector<std::int32_t>{8, 9});

  // Against a plain re-implementation: 64 experts in 8 groups, 3 kept, top-6, with and without a mask.
  const std::size_t E = 64, G = 8, per = 8, k = 6;
  std::vector<float> bias(E);
  for (std::size_t e = 0; e < E; ++e) bias[e] = 0.03f * static_cast<float>(e % 5);
  const TopKRouter router(RouterConfig::deepseek_v3(bias, E, k, G, 3, 1.0f));
  const Tensor<float> many = random_tensor({50, E}, 65);
  std::vector<RouterRequest> masked = {{25, 50, std::vector<std::uint8_t>(E, 1), {}}};
  for (std::size_t e = 0; e < E; e += 3) masked[0].allowed[e] = 0;
  const Routing r = router.route(many, masked);
  for (std::size_t t = 0; t < 50; ++t) {
    std::vector<double> sel(E);
    std::vector<bool> ok(E, true);
    for (std::size_t e = 0; e < E; ++e) {
      sel[e] = 1.0 / (1.0 + std::exp(-static_cast<double>(many(t, e)))) + bias[e];
      if (t >= 25) ok[e] = masked[0].allowed[e] != 0;
    }
    std::vector<std::pair<double, std::size_t>> groups;
    for (std::size_t g = 0; g < G; ++g) {
      std::vector<double> in;
      for (std::size_t e = g * per; e < (g + 1) * per; ++e) {
        if (ok[e]) in.push_back(sel[e]);
      }
      std::sort(in.rbegin(), in.rend());
      groups.emplace_back(-(in[0] + in[1]), g);
    }
    std::sort(groups.begin(), groups.end());
    std::vector<std::pair<double, std::size_t>> candidates;
    for (std::size_t i = 0; i < 3; ++i) {
      for (std::size_t e = groups[i].second * per; e < (groups[i].second + 1) * per; ++e) {
        if (ok[e]) candidates.emplace_back(-sel[e], e);
      }
    }
    std::sort(candidates.begin(), candidates.end());
    for (std::size_t s2 = 0; s2 < k; ++s2) {
      REQUIRE(r.expert(t, s2) == static_cast<std::int32_t>(candidates[s2].second));
    }
  }
}

TEST_CASE("Capacity: drop or re-route the overflow, in batch order", "[moe]") {
  // 8 tokens that all prefer experts 0 then 1, E = 4, k = 1, capacity factor 1: 2 slots per expert.
  Tensor<float> logits({8, 4});
  for (std::size_t t = 0; t < 8; ++t) {
    logits(t, 0) = 3.0f;
    logits(t, 1) = 2.0f;
    logits(t, 2) = 1.0f - 0.01f * static_cast<float>(t);
    logits(t, 3) = 0.0f;
  }
  RouterConfig c = RouterConfig::mixtral(4, 1);
  c.capacity_factor = 1.0f;
  c.overflow = CapacityOverflow::drop;
  const Routing dropped = TopKRouter(c).route(logits);
  CHECK(dropped.experts == std::vector<std::int32_t>{0, 0, -1, -1, -1, -1, -1, -1});
  CHECK(dropped.dropped == 6);
  CHECK(dropped.weights[2] == 0.0f);
  c.overflow = CapacityOverflow::reroute;
  const Routing moved = TopKRouter(c).route(logits);
  CHECK(moved.experts == std::vector<std::int32_t>{0, 0, 1, 1, 2, 2, 3, 3});
  CHECK(moved.rerouted == 6);
  CHECK(moved.dropped == 0);
  CHECK(moved.weights[4] == dropped.weights[0]);  // a moved slot keeps its weight
  const ExpertLoad load = expert_load(moved, 4);
  CHECK(load.max == 2);
  CHECK(load.jain_index == Approx(1.0));
}

TEST_CASE("Per-request masks and bias offsets", "[moe]") {
  const Tensor<float> logits = random_tensor({6, 16}, 60);
  const TopKRouter router(RouterConfig::qwen3_moe(16, 4, true));
  std::vector<RouterRequest> requests(2);
  requests[0] = {0, 3, std::vector<std::uint8_t>(16, 1), {}};
  for (std::size_t e = 0; e < 8; ++e) requests[0].allowed[e] = 0;  // tenant A: experts 8..15 only
  requests[1] = {3, 6, {}, std::vector<float>(16, 0.0f)};
  requests[1].bias_offset[13] = 100.0f;  // tenant B: always expert 13
  const Routing r = router.route(logits, requests);
  const Routing ref = router.route_ref(logits, requests);
  CHECK(r.experts == ref.experts);
  for (std::size_t t = 0; t < 3; ++t) {
    for (std::size_t s = 0; s < 4; ++s) CHECK(r.expert(t, s) >= 8);
  }
  for (std::size_t t = 3; t < 6; ++t) CHECK(r.expert(t, 0) == 13);
  // Weights come from the scores, not the offset selection values: still a distribution.
  float sum = 0.0f;
  for (std::size_t s = 0; s < 4; ++s) sum += r.weight(3, s);
  CHECK(sum == Approx(1.0f));
  // A token outside every request is routed as without requests.
  const Routing plain = router.route(logits.view().rows(0, 1));
  std::vector<RouterRequest> later = {{1, 6, {}, {}}};
  CHECK(std::equal(plain.experts.begin(), plain.experts.end(), router.route(logits, later).experts.begin()));

  std::vector<RouterRequest> bad = {{0, 7, {}, {}}};
  PERSONA_REQUIRE_ERROR(router.route(logits, bad), out_of_range, "request 0 covers tokens [0, 7)");
  bad = {{0, 2, std::vector<std::uint8_t>(15, 1), {}}};
  PERSONA_REQUIRE_ERROR(router.route(logits, bad), shape_mismatch, "allowed has 15 values");
  bad = {{0, 2, std::vector<std::uint8_t>(16, 0), {}}};
  bad[0].allowed[3] = 1;
  PERSONA_REQUIRE_ERROR(router.route(logits, bad), invalid_argument, "leaves 1 experts to choose from; top_k is 4");
  bad = {{0, 2, {}, {}}, {1, 3, {}, {}}};
  PERSONA_REQUIRE_ERROR(router.route(logits, bad), invalid_argument, "token 1 is covered by two requests");
}

TEST_CASE("Shared experts: weight 1 or a sigmoid gate", "[moe]") {
  const Tensor<float> logits = random_tensor({3, 8}, 61);
  RouterConfig c = RouterConfig::mixtral();
  c.shared_experts = 2;
  const Routing ones = TopKRouter(c).route(logits);
  CHECK(ones.shared_weights == std::vector<float>(6, 1.0f));
  c.shared_gate = SharedExpertGate::sigmoid;
  Tensor<float> gate({3, 2});
  gate(1, 0) = 2.0f;
  const Routing gated = TopKRouter(c).route(logits, {}, gate);
  CHECK(gated.shared_weights[0] == Approx(0.5f));
  CHECK(gated.shared_weights[2] == Approx(1.0f / (1.0f + std::exp(-2.0f))));
  PERSONA_REQUIRE_ERROR(TopKRouter(c).route(logits), shape_mismatch, "must be [3, 2]");
}

TEST_CASE("Bad configs and logits are Errors naming the field or token", "[moe]") {
  auto config = [](auto&& change) {
    RouterConfig c = RouterConfig::mixtral(8, 2);
    change(c);
    return c;
  };
  PERSONA_REQUIRE_ERROR(TopKRouter(config([](RouterConfig& c) { c.top_k = 9; })), invalid_argument,
                        "top_k is 9; it must be in 1..num_experts (8)");
  PERSONA_REQUIRE_ERROR(TopKRouter(config([](RouterConfig& c) { c.num_groups = 3; })), invalid_argument,
                        "num_groups is 3; it must divide num_experts (8)");
  PERSONA_REQUIRE_ERROR(TopKRouter(config([](RouterConfig& c) {
                          c.num_groups = 2;
                          c.topk_groups = 3;
                        })),
                        invalid_argument, "topk_groups is 3");
  PERSONA_REQUIRE_ERROR(TopKRouter(config([](RouterConfig& c) {
                          c.num_groups = 4;
                          c.topk_groups = 1;
                          c.top_k = 3;
                        })),
                        invalid_argument, "leaves only 2 to choose from");
  PERSONA_REQUIRE_ERROR(TopKRouter(config([](RouterConfig& c) { c.selection_bias = {1.0f}; })), invalid_argument,
                        "selection_bias has 1 values");
  PERSONA_REQUIRE_ERROR(TopKRouter(config([](RouterConfig& c) { c.capacity_factor = -1.0f; })), invalid_argument,
                        "capacity_factor is -1");
  PERSONA_REQUIRE_ERROR(TopKRouter(config([](RouterConfig& c) {
                          c.scoring = RouterScoring::logit_sigmoid;
                          c.num_groups = 2;
                        })),
                        invalid_argument, "takes no groups");
  const TopKRouter router(RouterConfig::mixtral());
  Tensor<float> logits = random_tensor({4, 8}, 62);
  logits(2, 5) = std::numeric_limits<float>::quiet_NaN();
  PERSONA_REQUIRE_ERROR(router.route(logits), invalid_argument, "token 2: the logit of expert 5 is nan");
  PERSONA_REQUIRE_ERROR(router.route_ref(logits), invalid_argument, "token 2: the logit of expert 5 is nan");
  PERSONA_REQUIRE_ERROR(router.route(Tensor<float>({4, 7})), shape_mismatch, "must be [tokens, 8]");
}

TEST_CASE("Expert plans: every routed slot exactly once, monotone offsets, inverse map", "[moe]") {
  const Tensor<float> logits = random_tensor({53, 16}, 70);
  RouterConfig c = RouterConfig::qwen3_moe(16, 4, true);
  c.capacity_factor = 0.75f;  // some slots dropped
  const Routing r = TopKRouter(c).route(logits);
  REQUIRE(r.dropped > 0);
  for (std::size_t tile : {1, 8}) {
    const ExpertPlan plan = plan_experts(r, 16, tile);
    std::size_t real = 0;
    for (std::size_t e = 0; e < 16; ++e) {
      REQUIRE(plan.offsets[e] <= plan.offsets[e + 1]);
      REQUIRE((plan.offsets[e + 1] - plan.offsets[e]) % tile == 0);
      REQUIRE(plan.offsets[e + 1] - plan.offsets[e] >= plan.counts[e]);
      std::int32_t last_token = -1;
      for (std::size_t i = plan.offsets[e]; i < plan.offsets[e + 1]; ++i) {
        const std::int32_t t = plan.entry_tokens[i];
        if (t < 0) continue;  // padding
        ++real;
        REQUIRE(t >= last_token);  // stable: token order within an expert
        last_token = t;
        const auto s = static_cast<std::size_t>(plan.entry_slots[i]);
        REQUIRE(r.expert(static_cast<std::size_t>(t), s) == static_cast<std::int32_t>(e));
        REQUIRE(plan.position[static_cast<std::size_t>(t) * 4 + s] == static_cast<std::int32_t>(i));
      }
    }
    CHECK(real == 53 * 4 - r.dropped);
    for (std::size_t i = 0; i < 53 * 4; ++i) CHECK((plan.position[i] < 0) == (r.experts[i] == kNoExpert));
  }
  Routing broken = r;
  broken.experts[5] = 16;
  PERSONA_REQUIRE_ERROR(plan_experts(broken, 16), out_of_range, "token 1 slot 1 has expert 16");
}

TEST_CASE("moe_ffn matches its per-token reference in every weight format", "[moe][ffn]") {
  const std::size_t H = 64, F = 96, E = 8, T = 41;
  const Tensor<float> x = random_tensor({T, H}, 80);
  const Tensor<float> logits = random_tensor({T, E}, 81);
  RouterConfig config = RouterConfig::mixtral(E, 2);
  config.shared_experts = 1;
  const Routing routing = TopKRouter(config).route(logits);
  const QuantSpec int8{8, 32, true}, int4{4, 32, false};
  for (const QuantSpec* spec : {static_cast<const QuantSpec*>(nullptr), &int8, &int4}) {
    INFO((spec ? spec->to_string() : std::string("f32")));
    auto weight = [&](std::size_t rows, std::size_t cols, std::uint32_t seed) {
      Tensor<float> w = random_tensor({rows, cols}, seed, 0.1f);
      return spec ? WeightMatrix(quantize(w, *spec)) : WeightMatrix(std::move(w));
    };
    std::vector<std::unique_ptr<ExpertFfn>> owned;
    std::vector<const ExpertFfn*> experts, shared;
    for (std::size_t e = 0; e <= E; ++e) {
      const auto seed = static_cast<std::uint32_t>(100 + 3 * e);
      owned.push_back(
          std::make_unique<ExpertFfn>(ExpertFfn{weight(F, H, seed), weight(F, H, seed + 1), weight(H, F, seed + 2)}));
      (e < E ? experts : shared).push_back(owned.back().get());
    }
    Tensor<float> ref({T, H});
    moe_ffn_ref(x, routing, experts, shared, ref);
    double scale = 0.0;
    for (float v : ref.span()) scale = std::max(scale, std::fabs(static_cast<double>(v)));
    REQUIRE(scale > 0.0);
    for_each_level_and_threads([&](IsaLevel, int threads) {
      MoeWorkspace workspace;
      for (std::size_t tile : {1, 4}) {
        const ExpertPlan plan = plan_experts(routing, E, tile);
        Tensor<float> y({T, H});
        moe_ffn(x, routing, plan, experts, shared, y, workspace);
        // Quantized: the same int8 products as the reference (bit for bit), up to the SIMD swiglu (a few
        // ulps of each activation); f32: also another summation order.
        for (std::size_t i = 0; i < y.numel(); ++i) REQUIRE(std::fabs(y.data()[i] - ref.data()[i]) <= 1e-4 * scale);
        if (threads == 2) {
          Tensor<float> one({T, H});
          ScopedNumThreads single(1);
          moe_ffn(x, routing, plan, experts, shared, one, workspace);
          CHECK(std::memcmp(one.data(), y.data(), y.numel() * sizeof(float)) == 0);
        }
        if (spec != nullptr) {
          // Batch invariance: token 7 alone gives the same bits.
          const Routing alone = TopKRouter(config).route(logits.view().rows(7, 8));
          Tensor<float> y7({1, H});
          moe_ffn(x.view().rows(7, 8), alone, plan_experts(alone, E), experts, shared, y7, workspace);
          CHECK(std::memcmp(y7.data(), &y(7, 0), H * sizeof(float)) == 0);
        }
      }
    });
    Tensor<float> wrong({T, H + 1});
    MoeWorkspace w;
    PERSONA_REQUIRE_ERROR(moe_ffn(x, routing, plan_experts(routing, E), experts, shared, wrong, w), shape_mismatch,
                          "must both be [tokens, hidden]");
    std::vector<const ExpertFfn*> missing = experts;
    missing[static_cast<std::size_t>(routing.expert(0, 0))] = nullptr;
    PERSONA_REQUIRE_ERROR(moe_ffn(x, routing, plan_experts(routing, E), missing, shared, ref, w), invalid_argument,
                          "has tokens but no weights");
  }
}

TEST_CASE("Load statistics and replay", "[moe]") {
  Routing r;
  r.tokens = 4;
  r.k = 1;
  r.experts = {0, 0, 0, 1};
  r.weights = {1, 1, 1, 1};
  const ExpertLoad load = expert_load(r, 2);
  CHECK(load.counts == std::vector<std::size_t>{3, 1});
  CHECK(load.max == 3);
  CHECK(load.mean == 2.0);
  CHECK(load.coefficient_of_variation == Approx(0.5));
  CHECK(load.jain_index == Approx(16.0 / (2.0 * 10.0)));
  // Uniform router probabilities and a perfectly even load give the Switch loss its minimum, 1.
  Routing even = r;
  even.experts = {0, 1, 0, 1};
  CHECK(expert_load(even, 2, Tensor<float>({4, 2})).switch_aux_loss == Approx(1.0));
  // All tokens on expert 0 with probability ~1: the loss approaches E = 2.
  Tensor<float> peaked({4, 2});
  for (std::size_t t = 0; t < 4; ++t) peaked(t, 0) = 30.0f;
  Routing all0 = r;
  all0.experts = {0, 0, 0, 0};
  CHECK(expert_load(all0, 2, peaked).switch_aux_loss == Approx(2.0).epsilon(1e-6));

  RoutingStats stats(2, 2, true);
  stats.record(1, r);
  stats.record(1, even);
  CHECK(stats.layer(1).counts == std::vector<std::size_t>{5, 3});
  CHECK(stats.layer(0).total == 0);
  CHECK(stats.replay(1) == std::vector<std::int32_t>{0, 0, 0, 1, 0, 1, 0, 1});
  PERSONA_REQUIRE_ERROR(stats.record(2, r), out_of_range, "layer 2 recorded; the stats have 2 layers");
  stats.reset();
  CHECK(stats.layer(1).total == 0);
}

TEST_CASE("Edge cases: huge capacity, biased renormalized softmax, saturated sigmoid, bad plans", "[moe]") {
  const Tensor<float> logits = random_tensor({5, 8}, 90);
  RouterConfig big = RouterConfig::mixtral(8, 2);
  big.capacity_factor = 1e20f;  // "unlimited" written as a huge factor: nothing dropped
  const Routing unlimited = TopKRouter(big).route(logits);
  CHECK(unlimited.dropped == 0);
  CHECK(unlimited.experts == TopKRouter(RouterConfig::mixtral(8, 2)).route(logits).experts);

  // A bias that picks experts whose full-softmax probability underflows: the renormalized weights are the
  // softmax of the chosen logits, finite and summing to 1.
  Tensor<float> peaked({1, 8});
  peaked(0, 0) = 200.0f;
  std::vector<RouterRequest> away = {{0, 1, {}, std::vector<float>(8, 0.0f)}};
  away[0].bias_offset[0] = -1000.0f;
  for (const Routing& r : {TopKRouter(RouterConfig::mixtral(8, 2)).route(peaked, away),
                           TopKRouter(RouterConfig::mixtral(8, 2)).route_ref(peaked, away)}) {
    CHECK(r.expert(0, 0) == 1);
    CHECK(r.expert(0, 1) == 2);
    CHECK(r.weight(0, 0) == Approx(0.5f));
    CHECK(r.weight(0, 1) == Approx(0.5f));
  }

  // Sigmoid scores saturate alike on every path: logits far below -80 tie, and the lower index wins.
  Tensor<float> low({1, 8});
  for (std::size_t e = 0; e < 8; ++e) low(0, e) = e == 1 ? -90.0f : -100.0f;
  RouterConfig sig;
  sig.num_experts = 8;
  sig.top_k = 1;
  sig.scoring = RouterScoring::sigmoid;
  for (IsaLevel level : supported_isa_levels()) {
    ScopedIsaLevel isa(level);
    CHECK(TopKRouter(sig).route(low).experts == TopKRouter(sig).route_ref(low).experts);
  }

  const Routing r = TopKRouter(RouterConfig::mixtral(8, 2)).route(logits);
  PERSONA_REQUIRE_ERROR(plan_experts(r, 8, std::numeric_limits<std::size_t>::max()), invalid_argument,
                        "it must be in 1..1024");
  Routing short_weights = r;
  short_weights.weights.pop_back();
  std::vector<const ExpertFfn*> none(8, nullptr);
  Tensor<float> x({5, 4}), y({5, 4});
  PERSONA_REQUIRE_ERROR(moe_ffn_ref(x, short_weights, none, {}, y), shape_mismatch, "the routing holds 9 weights");
}
