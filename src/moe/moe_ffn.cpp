// Expert FFNs over a plan: (expert, tile) tasks on per-thread scratch, each writing its entries' outputs;
// then a combine that adds them per token in slot order, so the sum never depends on the schedule.
#include "persona/moe/moe_ffn.hpp"

#include "core/kernels/core_kernel_table.hpp"
#include "persona/core/ops.hpp"
#include "persona/core/threading.hpp"
#include "persona/quant/quantized_matmul.hpp"
#include "quant/quant_product.hpp"

#include <algorithm>
#include <vector>

namespace persona {
namespace {

struct TileScratch {
  std::vector<float> rows, gate, up;  // [tile, hidden], [tile, ffn] x 2
  detail::QuantActivationScratch activations;

  void fit(std::size_t tokens, std::size_t hidden, std::size_t ffn) {
    if (rows.size() < tokens * hidden) rows.resize(tokens * hidden);
    if (gate.size() < tokens * ffn) gate.resize(tokens * ffn);
    if (up.size() < tokens * ffn) up.resize(tokens * ffn);
  }
};

struct Task {
  const ExpertFfn* ffn;
  std::int32_t shared;     // -1: routed expert tile over plan entries; else shared expert j over tokens
  std::size_t begin, end;  // entries (routed) or tokens (shared)
};

void check_ffn(const ExpertFfn& f, std::size_t hidden, const char* what, std::size_t index) {
  const std::size_t ffn = f.gate.rows();
  if (f.gate.cols() != hidden || f.up.rows() != ffn || f.up.cols() != hidden || f.down.rows() != hidden ||
      f.down.cols() != ffn) {
    PERSONA_THROW_AT("moe_ffn", shape_mismatch,
                     "{} {}: gate [{}, {}], up [{}, {}], down [{}, {}] do not form an FFN of hidden {}", what, index,
                     f.gate.rows(), f.gate.cols(), f.up.rows(), f.up.cols(), f.down.rows(), f.down.cols(), hidden);
  }
}

void check_inputs(TensorView<const float> x, const Routing& routing, std::span<const ExpertFfn* const> experts,
                  std::span<const ExpertFfn* const> shared, TensorView<float> y, const std::size_t* expert_counts,
                  const char* function) {
  if (x.rank() != 2 || y.rank() != 2 || x.dim(0) != y.dim(0) || x.dim(1) != y.dim(1) ||
      (x.dim(1) > 1 && (x.stride(1) != 1 || y.stride(1) != 1))) {
    PERSONA_THROW_AT(function, shape_mismatch, "x {} and y {} must both be [tokens, hidden] with contiguous rows",
                     x.shape().to_string(), y.shape().to_string());
  }
  PERSONA_CHECK_CODE(shape_mismatch, routing.tokens == x.dim(0) && routing.experts.size() == routing.tokens * routing.k,
                     "the routing is for {} tokens but x has {}", routing.tokens, x.dim(0));
  PERSONA_CHECK_CODE(shape_mismatch, shared.size() == routing.shared,
                     "{} shared experts given; the routing has weights for {}", shared.size(), routing.shared);
  PERSONA_CHECK_CODE(shape_mismatch,
                     routing.weights.size() == routing.experts.size() &&
                         routing.shared_weights.size() == routing.tokens * routing.shared,
                     "the routing holds {} weights and {} shared weights for {} tokens, k = {}, {} shared experts",
                     routing.weights.size(), routing.shared_weights.size(), routing.tokens, routing.k, routing.shared);
  for (std::size_t e = 0; e < experts.size(); ++e) {
    const bool used = expert_counts != nullptr ? expert_counts[e] > 0
                                               : std::find(routing.experts.begin(), routing.experts.end(),
                                                           static_cast<std::int32_t>(e)) != routing.experts.end();
    if (!used) continue;
    PERSONA_CHECK(experts[e] != nullptr, "expert {} has tokens but no weights", e);
    check_ffn(*experts[e], x.dim(1), "expert", e);
  }
  for (std::size_t j = 0; j < shared.size(); ++j) {
    PERSONA_CHECK(shared[j] != nullptr, "shared expert {} has no weights", j);
    check_ffn(*shared[j], x.dim(1), "shared expert", j);
  }
}

}  // namespace

struct MoeWorkspace::Impl {
  std::vector<TileScratch> slots;
  std::vector<float> entry_out;   // [entries, hidden]
  std::vector<float> shared_out;  // [tokens, shared, hidden]
  std::vector<Task> tasks;
};

namespace detail {
struct MoeWorkspaceAccess {
  static MoeWorkspace::Impl& impl(MoeWorkspace& w) noexcept { return *w.impl_; }
};
}  // namespace detail

MoeWorkspace::MoeWorkspace() : impl_(std::make_unique<Impl>()) {}
MoeWorkspace::~MoeWorkspace() = default;
MoeWorkspace::MoeWorkspace(MoeWorkspace&&) noexcept = default;
MoeWorkspace& MoeWorkspace::operator=(MoeWorkspace&&) noexcept = default;

std::size_t MoeWorkspace::bytes() const noexcept {
  std::size_t floats = impl_->entry_out.capacity() + impl_->shared_out.capacity();
  std::size_t bytes = 0;
  for (const TileScratch& s : impl_->slots) {
    floats += s.rows.capacity() + s.gate.capacity() + s.up.capacity() + s.activations.sums.capacity() +
              s.activations.scales.capacity();
    bytes += s.activations.codes.capacity() + s.activations.code_sums.capacity() * sizeof(std::int32_t);
  }
  return bytes + floats * sizeof(float) + impl_->tasks.capacity() * sizeof(Task);
}

void moe_ffn(TensorView<const float> x, const Routing& routing, const ExpertPlan& plan,
             std::span<const ExpertFfn* const> experts, std::span<const ExpertFfn* const> shared, TensorView<float> y,
             MoeWorkspace& workspace) {
  PERSONA_CHECK_CODE(shape_mismatch,
                     plan.tokens == routing.tokens && plan.k == routing.k && plan.num_experts == experts.size() &&
                         plan.position.size() == routing.tokens * routing.k,
                     "the plan is for {} tokens, k = {}, {} experts; the call has {} tokens, k = {}, {} experts",
                     plan.tokens, plan.k, plan.num_experts, routing.tokens, routing.k, experts.size());
  check_inputs(x, routing, experts, shared, y, plan.counts.data(), "moe_ffn");
  const std::size_t T = x.dim(0), H = x.dim(1), k = routing.k, S = shared.size();
  auto& w = detail::MoeWorkspaceAccess::impl(workspace);
  if (w.slots.size() < thread_slot_count()) w.slots.resize(thread_slot_count());
  if (w.entry_out.size() < plan.entries() * H) w.entry_out.resize(plan.entries() * H);
  if (w.shared_out.size() < T * S * H) w.shared_out.resize(T * S * H);
  w.tasks.clear();
  for (std::size_t e = 0; e < experts.size(); ++e) {
    for (std::size_t b = plan.offsets[e]; b < plan.offsets[e + 1]; b += kMoeTileTokens) {
      w.tasks.push_back({experts[e], -1, b, std::min(b + kMoeTileTokens, plan.offsets[e + 1])});
    }
  }
  for (std::size_t j = 0; j < S; ++j) {
    for (std::size_t b = 0; b < T; b += kMoeTileTokens) {
      w.tasks.push_back({shared[j], static_cast<std::int32_t>(j), b, std::min(b + kMoeTileTokens, T)});
    }
  }
  const detail::CoreKernelTable& core = detail::core_kernels();
  parallel_for_slots(w.tasks.size(), 1, [&](std::size_t slot, std::size_t first, std::size_t last) {
    TileScratch& s = w.slots[slot];
    for (std::size_t i = first; i < last; ++i) {
      const Task& task = w.tasks[i];
      const ExpertFfn& f = *task.ffn;
      const std::size_t n = task.end - task.begin, F = f.ffn();
      s.fit(n, H, F);
      TensorView<const float> rows;
      TensorView<float> out;
      if (task.shared >= 0) {
        rows = x.rows(task.begin, task.end);
        out = TensorView<float>(w.shared_out.data() + (task.begin * S + static_cast<std::size_t>(task.shared)) * H,
                                {n, H}, {S * H, 1}, (n - 1) * S * H + H);
      } else {
        for (std::size_t r = 0; r < n; ++r) {
          const std::int32_t t = plan.entry_tokens[task.begin + r];
          float* dst = s.rows.data() + r * H;
          if (t < 0) {
            std::fill_n(dst, H, 0.0f);  // tile padding
          } else {
            std::copy_n(&x(static_cast<std::size_t>(t), 0), H, dst);
          }
        }
        rows = TensorView<const float>(s.rows.data(), {n, H});
        out = TensorView<float>(w.entry_out.data() + task.begin * H, {n, H});
      }
      const TensorView<float> gate(s.gate.data(), {n, F}), up(s.up.data(), {n, F});
      detail::weight_product(f.gate, rows, gate, s.activations, "moe_ffn");
      detail::weight_product(f.up, rows, up, s.activations, "moe_ffn");
      core.swiglu(s.gate.data(), s.up.data(), s.gate.data(), n * F);
      detail::weight_product(f.down, gate, out, s.activations, "moe_ffn");
    }
  });
  // Combine in slot order, then the shared experts: the same sum for any schedule and any batch.
  parallel_for(T, 16, [&](std::size_t begin, std::size_t end) {
    for (std::size_t t = begin; t < end; ++t) {
      float* yt = &y(t, 0);
      std::fill_n(yt, H, 0.0f);
      for (std::size_t slot = 0; slot < k; ++slot) {
        const std::int32_t p = plan.position[t * k + slot];
        if (p < 0) continue;
        const float weight = routing.weights[t * k + slot];
        const float* o = w.entry_out.data() + static_cast<std::size_t>(p) * H;
        for (std::size_t h = 0; h < H; ++h) yt[h] += weight * o[h];
      }
      for (std::size_t j = 0; j < S; ++j) {
        const float weight = routing.shared_weights[t * S + j];
        const float* o = w.shared_out.data() + (t * S + j) * H;
        for (std::size_t h = 0; h < H; ++h) yt[h] += weight * o[h];
      }
    }
  });
}

void moe_ffn_ref(TensorView<const float> x, const Routing& routing, std::span<const ExpertFfn* const> experts,
                 std::span<const ExpertFfn* const> shared, TensorView<float> y) {
  check_inputs(x, routing, experts, shared, y, nullptr, "moe_ffn_ref");
  const std::size_t T = x.dim(0), H = x.dim(1), k = routing.k, S = shared.size();
  for (std::size_t e = 0; e < routing.experts.size(); ++e) {
    const std::int32_t id = routing.experts[e];
    PERSONA_CHECK_CODE(out_of_range, id == kNoExpert || (id >= 0 && static_cast<std::size_t>(id) < experts.size()),
                       "token {} slot {} has expert {}; experts are 0..{}", e / k, e % k, id, experts.size() - 1);
  }
  auto product = [](const WeightMatrix& m, TensorView<const float> in, TensorView<float> out) {
    if (const QuantizedMatrix* q = m.quantized_matrix()) {
      quantized_matmul_ref(in, *q, out);
    } else if (const Bf16Matrix* b = m.bf16()) {
      bf16_matmul_ref(in, *b, out);
    } else {
      matmul_ref(in, *m.f32(), out, Transpose::yes);
    }
  };
  auto run = [&](const ExpertFfn& f, std::size_t t, Tensor<float>& out) {
    const std::size_t F = f.ffn();
    Tensor<float> gate({1, F}), up({1, F});
    product(f.gate, x.rows(t, t + 1), gate);
    product(f.up, x.rows(t, t + 1), up);
    swiglu_ref(gate, up, gate);
    product(f.down, gate, out);
  };
  Tensor<float> out({1, H});
  for (std::size_t t = 0; t < T; ++t) {
    float* yt = &y(t, 0);
    std::fill_n(yt, H, 0.0f);
    for (std::size_t slot = 0; slot < k; ++slot) {
      const std::int32_t e = routing.experts[t * k + slot];
      if (e == kNoExpert) continue;
      run(*experts[static_cast<std::size_t>(e)], t, out);
      const float weight = routing.weights[t * k + slot];
      for (std::size_t h = 0; h < H; ++h) yt[h] += weight * out(0, h);
    }
    for (std::size_t j = 0; j < S; ++j) {
      run(*shared[j], t, out);
      const float weight = routing.shared_weights[t * S + j];
      for (std::size_t h = 0; h < H; ++h) yt[h] += weight * out(0, h);
    }
  }
}

}  // namespace persona
