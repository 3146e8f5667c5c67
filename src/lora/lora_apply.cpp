// Planning and running many adapters in one batch.
#include "persona/lora/lora_apply.hpp"

#include "persona/core/threading.hpp"
#include "quant/quant_product.hpp"

#include <algorithm>
#include <vector>

namespace persona {
namespace {

void check_batch(TensorView<const float> x, TensorView<float> y, std::span<const LoraModule* const> slots,
                 const LoraBatchPlan& plan, const char* function) {
  if (x.rank() != 2 || y.rank() != 2 || x.dim(0) != y.dim(0)) {
    PERSONA_THROW_AT(function, shape_mismatch, "x {} and y {} must be [tokens, in] and [tokens, out]",
                     x.shape().to_string(), y.shape().to_string());
  }
  if ((x.dim(1) > 1 && x.stride(1) != 1) || (y.dim(1) > 1 && y.stride(1) != 1)) {
    PERSONA_THROW_AT(function, invalid_argument, "x and y must have contiguous rows, got strides {} and {}",
                     x.strides().to_string(), y.strides().to_string());
  }
  if (plan.token_count != x.dim(0)) {
    PERSONA_THROW_AT(function, shape_mismatch, "the plan is for {} tokens but x has {}", plan.token_count, x.dim(0));
  }
  for (const LoraSegment& s : plan.segments) {
    const auto slot = static_cast<std::size_t>(s.slot);
    if (slot >= slots.size() || slots[slot] == nullptr) {
      PERSONA_THROW_AT(function, invalid_argument, "slot {} has tokens but no module ({} slots given)", slot,
                       slots.size());
    }
    const LoraModule& m = *slots[slot];
    if (m.in_features() != x.dim(1) || m.out_features() != y.dim(1)) {
      PERSONA_THROW_AT(function, shape_mismatch, "slot {}: the module is [out {}, in {}] but x is {} and y is {}", slot,
                       m.out_features(), m.in_features(), x.shape().to_string(), y.shape().to_string());
    }
  }
}

// One thread's scratch, grown to the largest chunk it has run.
struct SlotScratch {
  std::vector<float> rows;      // [tokens, in]: gathered rows of x
  std::vector<float> shrunk;    // [tokens, rank]
  std::vector<float> expanded;  // [tokens, out]
  detail::QuantActivationScratch activations;

  void fit(std::size_t tokens, std::size_t in, std::size_t out, std::size_t rank) {
    grow(rows, tokens * in);
    grow(shrunk, tokens * rank);
    grow(expanded, tokens * out);
    // The smallest group (8) has the most groups; the int8 path quantizes x (k = in) and A x (k = rank).
    activations.reserve(tokens, std::max(in, rank), 8);
  }
  std::size_t bytes() const noexcept {
    return (rows.capacity() + shrunk.capacity() + expanded.capacity() + activations.sums.capacity() +
            activations.scales.capacity()) *
               sizeof(float) +
           activations.codes.capacity() + activations.code_sums.capacity() * sizeof(std::int32_t);
  }

 private:
  static void grow(std::vector<float>& v, std::size_t n) {
    if (v.size() < n) v.resize(n);
  }
};

}  // namespace

struct LoraWorkspace::Impl {
  std::vector<SlotScratch> slots;

  // Every slot a parallel loop may use exists; each grows inside its own task.
  std::span<SlotScratch> slots_for_run() {
    if (slots.size() < thread_slot_count()) slots.resize(thread_slot_count());
    return slots;
  }
};

namespace detail {
struct LoraWorkspaceAccess {
  static LoraWorkspace::Impl& impl(LoraWorkspace& w) noexcept { return *w.impl_; }
};
}  // namespace detail

LoraWorkspace::LoraWorkspace() : impl_(std::make_unique<Impl>()) {}
LoraWorkspace::~LoraWorkspace() = default;
LoraWorkspace::LoraWorkspace(LoraWorkspace&&) noexcept = default;
LoraWorkspace& LoraWorkspace::operator=(LoraWorkspace&&) noexcept = default;

void LoraWorkspace::reserve(std::size_t in, std::size_t out, std::size_t max_rank) {
  for (SlotScratch& s : impl_->slots_for_run()) s.fit(kLoraChunkTokens, in, out, max_rank);
}

std::size_t LoraWorkspace::bytes() const noexcept {
  std::size_t total = 0;
  for (const SlotScratch& s : impl_->slots) total += s.bytes();
  return total;
}

namespace {

// Runs one module on `count` tokens listed at `tokens`: gathers their rows (unless they are
// consecutive), shrinks, expands and adds scale * result to their rows of y. With a DoRA row scale n
// (and y holding the base output), the rows become n * (y + scale * result) instead.
void run_tokens(TensorView<const float> x, TensorView<float> y, const LoraModule& m, const std::size_t* tokens,
                std::size_t count, const float* dora_row_scale, SlotScratch& scratch, const char* function) {
  const std::size_t in = x.dim(1), out = y.dim(1), rank = m.rank();
  scratch.fit(count, in, out, rank);
  TensorView<const float> rows;
  const bool consecutive = tokens[count - 1] - tokens[0] == count - 1;
  if (consecutive) {
    rows = x.rows(tokens[0], tokens[0] + count);
  } else {
    for (std::size_t i = 0; i < count; ++i) std::copy_n(&x(tokens[i], 0), in, scratch.rows.data() + i * in);
    rows = TensorView<const float>(scratch.rows.data(), {count, in});
  }
  const TensorView<float> shrunk(scratch.shrunk.data(), {count, rank});
  detail::weight_product(m.a(), rows, shrunk, scratch.activations, function);
  const float scale = m.scale();
  if (m.b().quantized() && dora_row_scale == nullptr) {
    // The expansion adds scale * B (A x) straight into y, one rounding per output: a block of rows when the
    // tokens are consecutive (always so for one token), else row by row, so that a token's bits never
    // depend on which other tokens share its adapter.
    if (consecutive) {
      detail::weight_product(m.b(), shrunk, y.rows(tokens[0], tokens[0] + count), scratch.activations, function, true,
                             scale);
    } else {
      for (std::size_t i = 0; i < count; ++i) {
        detail::weight_product(m.b(), shrunk.rows(i, i + 1), y.rows(tokens[i], tokens[i] + 1), scratch.activations,
                               function, true, scale);
      }
    }
    return;
  }
  const TensorView<float> expanded(scratch.expanded.data(), {count, out});
  detail::weight_product(m.b(), shrunk, expanded, scratch.activations, function);
  for (std::size_t i = 0; i < count; ++i) {
    float* row = &y(tokens[i], 0);
    const float* e = scratch.expanded.data() + i * out;
    if (dora_row_scale != nullptr) {
      for (std::size_t o = 0; o < out; ++o) row[o] = dora_row_scale[o] * (row[o] + scale * e[o]);
    } else {
      for (std::size_t o = 0; o < out; ++o) row[o] += scale * e[o];
    }
  }
}

constexpr std::size_t kGatherPrefetchBytes = 8192;

// Starts the first `bytes` of each plane of a matrix on their way into the cache: in the gather form
// each token switches to another adapter, and the hardware prefetchers only pick up a stream after
// its first misses.
void prefetch_start(const LoraMatrix& matrix, std::size_t bytes) noexcept {
  auto lines = [bytes](const void* data, std::size_t size) {
    const auto* p = static_cast<const char*>(data);
    for (std::size_t offset = 0; offset < std::min(size, bytes); offset += 64) __builtin_prefetch(p + offset);
  };
  if (const QuantizedMatrix* q = matrix.quantized_matrix()) {
    lines(q->codes().data(), q->codes().size());
    lines(q->scales().data(), q->scales().size());
  } else if (const Bf16Matrix* b = matrix.bf16()) {
    lines(b->data(), b->bytes());
  } else {
    lines(matrix.f32()->data(), matrix.f32()->numel() * sizeof(float));
  }
}

// Both forms over the plan; row_scales[slot] is the DoRA row scale of DoRA slots.
void run_plan(TensorView<const float> x, TensorView<float> y, std::span<const LoraModule* const> slots,
              const LoraBatchPlan& plan, LoraForm form, std::span<const Tensor<float>> row_scales,
              LoraWorkspace& workspace, const char* function) {
  if (plan.tokens.empty()) return;
  if (form == LoraForm::automatic) {
    form = plan.tokens.size() >= kLoraSegmentMinTokens * plan.segments.size() ? LoraForm::segment : LoraForm::gather;
  }
  const std::span<SlotScratch> scratch = detail::LoraWorkspaceAccess::impl(workspace).slots_for_run();
  auto row_scale = [&](std::int32_t slot) -> const float* {
    const auto s = static_cast<std::size_t>(slot);
    return row_scales.empty() || row_scales[s].empty() ? nullptr : row_scales[s].data();
  };
  if (form == LoraForm::segment) {
    parallel_for_slots(plan.chunks.size(), 1, [&](std::size_t thread, std::size_t begin, std::size_t end) {
      for (std::size_t i = begin; i < end; ++i) {
        const LoraSegment& c = plan.chunks[i];
        run_tokens(x, y, *slots[static_cast<std::size_t>(c.slot)], plan.tokens.data() + c.begin, c.end - c.begin,
                   row_scale(c.slot), scratch[thread], function);
      }
    });
  } else {
    // A few tokens per task: each token costs microseconds, a task switch a fraction of one.
    parallel_for_slots(plan.tokens.size(), 4, [&](std::size_t thread, std::size_t begin, std::size_t end) {
      for (std::size_t i = begin; i < end; ++i) {
        if (i + 1 < plan.tokens.size()) {
          const LoraModule& next = *slots[static_cast<std::size_t>(plan.token_slots[i + 1])];
          prefetch_start(next.a(), kGatherPrefetchBytes);
          prefetch_start(next.b(), kGatherPrefetchBytes);
        }
        const std::int32_t slot = plan.token_slots[i];
        run_tokens(x, y, *slots[static_cast<std::size_t>(slot)], &plan.tokens[i], 1, row_scale(slot), scratch[thread],
                   function);
      }
    });
  }
}

}  // namespace

void LoraBatchPlan::reserve(std::size_t max_tokens, std::size_t slots) {
  tokens.reserve(max_tokens);
  token_slots.reserve(max_tokens);
  segments.reserve(slots);
  chunks.reserve(slots + max_tokens / kLoraChunkTokens);  // each segment's last chunk may be partial
  slot_offsets.reserve(slots + 1);
}

void plan_lora_batch(std::span<const std::int32_t> token_slots, std::size_t slot_count, LoraBatchPlan& plan) {
  plan.token_count = token_slots.size();
  // A counting sort with the offsets as cursors: offsets[s] ends at slot s's end, then shifts back one.
  std::vector<std::size_t>& offsets = plan.slot_offsets;
  offsets.assign(slot_count + 1, 0);
  for (std::size_t t = 0; t < token_slots.size(); ++t) {
    const std::int32_t s = token_slots[t];
    PERSONA_CHECK_CODE(out_of_range, s == kNoLora || (s >= 0 && static_cast<std::size_t>(s) < slot_count),
                       "token {} has slot {}; slots are 0..{} or kNoLora ({})", t, s,
                       static_cast<std::int64_t>(slot_count) - 1, kNoLora);
    if (s != kNoLora) ++offsets[static_cast<std::size_t>(s) + 1];
  }
  for (std::size_t s = 0; s < slot_count; ++s) offsets[s + 1] += offsets[s];
  plan.tokens.resize(offsets[slot_count]);
  plan.token_slots.resize(offsets[slot_count]);
  for (std::size_t t = 0; t < token_slots.size(); ++t) {
    if (token_slots[t] == kNoLora) continue;
    const std::size_t i = offsets[static_cast<std::size_t>(token_slots[t])]++;
    plan.tokens[i] = t;
    plan.token_slots[i] = token_slots[t];
  }
  for (std::size_t s = slot_count; s > 0; --s) offsets[s] = offsets[s - 1];
  offsets[0] = 0;
  plan.segments.clear();
  plan.chunks.clear();
  plan.max_segment_tokens = 0;
  for (std::size_t s = 0; s < slot_count; ++s) {
    if (offsets[s + 1] == offsets[s]) continue;
    const auto slot = static_cast<std::int32_t>(s);
    plan.segments.push_back({slot, offsets[s], offsets[s + 1]});
    plan.max_segment_tokens = std::max(plan.max_segment_tokens, offsets[s + 1] - offsets[s]);
    for (std::size_t begin = offsets[s]; begin < offsets[s + 1]; begin += kLoraChunkTokens) {
      plan.chunks.push_back({slot, begin, std::min(begin + kLoraChunkTokens, offsets[s + 1])});
    }
  }
}

LoraBatchPlan plan_lora_batch(std::span<const std::int32_t> token_slots, std::size_t slot_count) {
  LoraBatchPlan plan;
  plan_lora_batch(token_slots, slot_count, plan);
  return plan;
}

void apply_lora(TensorView<const float> x, TensorView<float> y, std::span<const LoraModule* const> slots,
                const LoraBatchPlan& plan, LoraWorkspace& workspace, LoraForm form) {
  check_batch(x, y, slots, plan, "apply_lora");
  for (const LoraSegment& s : plan.segments) {
    PERSONA_CHECK_CODE(unsupported, !slots[static_cast<std::size_t>(s.slot)]->dora(),
                       "slot {} is a DoRA module, whose output depends on the base weight: use lora_linear", s.slot);
  }
  run_plan(x, y, slots, plan, form, {}, workspace, "apply_lora");
}

void apply_lora(TensorView<const float> x, TensorView<float> y, std::span<const LoraModule* const> slots,
                const LoraBatchPlan& plan, LoraForm form) {
  LoraWorkspace workspace;
  apply_lora(x, y, slots, plan, workspace, form);
}

void apply_lora_ref(TensorView<const float> x, TensorView<float> y, std::span<const LoraModule* const> slots,
                    std::span<const std::int32_t> token_slots) {
  const LoraBatchPlan plan = plan_lora_batch(token_slots, slots.size());
  check_batch(x, y, slots, plan, "apply_lora_ref");
  for (const LoraSegment& s : plan.segments) {
    const LoraModule& m = *slots[static_cast<std::size_t>(s.slot)];
    const Tensor<float> a = m.a().to_f32(), b = m.b().to_f32();
    std::vector<double> h(m.rank());
    for (std::size_t i = s.begin; i < s.end; ++i) {
      const std::size_t t = plan.tokens[i];
      for (std::size_t r = 0; r < m.rank(); ++r) {
        double sum = 0.0;
        for (std::size_t c = 0; c < m.in_features(); ++c) sum += static_cast<double>(a(r, c)) * x(t, c);
        h[r] = sum;
      }
      for (std::size_t o = 0; o < m.out_features(); ++o) {
        double sum = 0.0;
        for (std::size_t r = 0; r < m.rank(); ++r) sum += static_cast<double>(b(o, r)) * h[r];
        y(t, o) += static_cast<float>(static_cast<double>(m.scale()) * sum);
      }
    }
  }
}

void lora_linear(TensorView<const float> x, const WeightMatrix& base, TensorView<float> y,
                 std::span<const LoraModule* const> slots, const LoraBatchPlan& plan) {
  LoraWorkspace workspace;
  lora_linear(x, base, y, slots, plan, workspace);
}

void lora_linear(TensorView<const float> x, const WeightMatrix& base, TensorView<float> y,
                 std::span<const LoraModule* const> slots, const LoraBatchPlan& plan, LoraWorkspace& workspace) {
  check_batch(x, y, slots, plan, "lora_linear");
  PERSONA_CHECK_CODE(shape_mismatch, base.rows() == y.dim(1) && base.cols() == x.dim(1),
                     "the base weight is [{}, {}] but x is {} and y is {}", base.rows(), base.cols(),
                     x.shape().to_string(), y.shape().to_string());
  base.multiply(x, y);
  // DoRA slots scale each output row by m / ||W + scale B A||, from the (dequantized) base weight:
  // computed (and allocated) per call, the price of DoRA without merging.
  std::vector<Tensor<float>> row_scales;
  Tensor<float> base_f32;
  for (const LoraSegment& s : plan.segments) {
    const LoraModule& m = *slots[static_cast<std::size_t>(s.slot)];
    if (!m.dora()) continue;
    if (base_f32.empty()) base_f32 = base.to_f32();
    row_scales.resize(slots.size());
    row_scales[static_cast<std::size_t>(s.slot)] = dora_row_scale(m, base_f32);
  }
  run_plan(x, y, slots, plan, LoraForm::automatic, row_scales, workspace, "lora_linear");
}

}  // namespace persona
