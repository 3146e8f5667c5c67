// Planning and running many adapters in one batch.
#include "persona/lora/lora_apply.hpp"

#include "persona/core/threading.hpp"

#include <algorithm>
#include <vector>

namespace persona {
namespace {

void check_batch(TensorView<const float> x, TensorView<float> y, std::span<const LoraModule* const> slots,
                 const LoraBatchPlan& plan, const char* function) {
  if (x.rank() != 2 || y.rank() != 2 || x.dim(0) != y.dim(0)) {
    throw Error(ErrorCode::shape_mismatch, function,
                fmt::format("x {} and y {} must be [tokens, in] and [tokens, out]", x.shape().to_string(),
                            y.shape().to_string()));
  }
  if ((x.dim(1) > 1 && x.stride(1) != 1) || (y.dim(1) > 1 && y.stride(1) != 1)) {
    throw Error(ErrorCode::invalid_argument, function,
                fmt::format("x and y must have contiguous rows, got strides {} and {}", x.strides().to_string(),
                            y.strides().to_string()));
  }
  if (plan.token_count != x.dim(0)) {
    throw Error(ErrorCode::shape_mismatch, function,
                fmt::format("the plan is for {} tokens but x has {}", plan.token_count, x.dim(0)));
  }
  for (const LoraSegment& s : plan.segments) {
    const auto slot = static_cast<std::size_t>(s.slot);
    if (slot >= slots.size() || slots[slot] == nullptr) {
      throw Error(ErrorCode::invalid_argument, function,
                  fmt::format("slot {} has tokens but no module ({} slots given)", slot, slots.size()));
    }
    const LoraModule& m = *slots[slot];
    if (m.in_features() != x.dim(1) || m.out_features() != y.dim(1)) {
      throw Error(ErrorCode::shape_mismatch, function,
                  fmt::format("slot {}: the module is [out {}, in {}] but x is {} and y is {}", slot, m.out_features(),
                              m.in_features(), x.shape().to_string(), y.shape().to_string()));
    }
  }
}

// Runs one slot on `count` tokens listed at `tokens`: gathers their rows (unless they are consecutive),
// shrinks, expands and adds scale * result to their rows of y. With a DoRA row scale n (and y holding
// the base output), the rows become n * (y + scale * result) instead.
void run_tokens(TensorView<const float> x, TensorView<float> y, const LoraModule& m, const std::size_t* tokens,
                std::size_t count, const float* dora_row_scale = nullptr) {
  const std::size_t in = x.dim(1), out = y.dim(1);
  const bool consecutive = tokens[count - 1] - tokens[0] == count - 1;
  Tensor<float> gathered;
  TensorView<const float> rows;
  if (consecutive) {
    rows = x.rows(tokens[0], tokens[0] + count);
  } else {
    gathered = Tensor<float>({count, in});
    for (std::size_t i = 0; i < count; ++i) std::copy_n(&x(tokens[i], 0), in, &gathered(i, 0));
    rows = gathered;
  }
  Tensor<float> shrunk({count, m.rank()}), expanded({count, out});
  m.a().multiply(rows, shrunk);
  m.b().multiply(shrunk, expanded);
  const float scale = m.scale();
  for (std::size_t i = 0; i < count; ++i) {
    float* row = &y(tokens[i], 0);
    if (dora_row_scale != nullptr) {
      for (std::size_t o = 0; o < out; ++o) row[o] = dora_row_scale[o] * (row[o] + scale * expanded(i, o));
    } else {
      for (std::size_t o = 0; o < out; ++o) row[o] += scale * expanded(i, o);
    }
  }
}

// Both forms over the plan's segments; row_scales[slot] is the DoRA row scale of DoRA slots.
void run_plan(TensorView<const float> x, TensorView<float> y, std::span<const LoraModule* const> slots,
              const LoraBatchPlan& plan, LoraForm form, std::span<const Tensor<float>> row_scales) {
  if (plan.tokens.empty()) return;
  if (form == LoraForm::automatic) {
    form = plan.tokens.size() >= kLoraSegmentMinTokens * plan.segments.size() ? LoraForm::segment : LoraForm::gather;
  }
  parallel_for(plan.segments.size(), 1, [&](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) {
      const LoraSegment& s = plan.segments[i];
      const auto slot = static_cast<std::size_t>(s.slot);
      const float* row_scale = row_scales.empty() || row_scales[slot].empty() ? nullptr : row_scales[slot].data();
      if (form == LoraForm::segment) {
        run_tokens(x, y, *slots[slot], plan.tokens.data() + s.begin, s.end - s.begin, row_scale);
      } else {
        for (std::size_t t = s.begin; t < s.end; ++t) run_tokens(x, y, *slots[slot], &plan.tokens[t], 1, row_scale);
      }
    }
  });
}

}  // namespace

LoraBatchPlan plan_lora_batch(std::span<const std::int32_t> token_slots, std::size_t slot_count) {
  LoraBatchPlan plan;
  plan.token_count = token_slots.size();
  std::vector<std::size_t> counts(slot_count + 1, 0);
  for (std::size_t t = 0; t < token_slots.size(); ++t) {
    const std::int32_t s = token_slots[t];
    PERSONA_CHECK_CODE(out_of_range, s == kNoLora || (s >= 0 && static_cast<std::size_t>(s) < slot_count),
                       "token {} has slot {}; slots are 0..{} or kNoLora ({})", t, s,
                       static_cast<std::int64_t>(slot_count) - 1, kNoLora);
    if (s != kNoLora) ++counts[static_cast<std::size_t>(s) + 1];
  }
  for (std::size_t s = 0; s < slot_count; ++s) counts[s + 1] += counts[s];  // exclusive prefix sums
  plan.tokens.resize(counts[slot_count]);
  std::vector<std::size_t> next(counts.begin(), counts.end() - 1);
  for (std::size_t t = 0; t < token_slots.size(); ++t) {
    if (token_slots[t] != kNoLora) plan.tokens[next[static_cast<std::size_t>(token_slots[t])]++] = t;
  }
  for (std::size_t s = 0; s < slot_count; ++s) {
    if (counts[s + 1] > counts[s]) {
      plan.segments.push_back({static_cast<std::int32_t>(s), counts[s], counts[s + 1]});
      plan.max_segment_tokens = std::max(plan.max_segment_tokens, counts[s + 1] - counts[s]);
    }
  }
  return plan;
}

void apply_lora(TensorView<const float> x, TensorView<float> y, std::span<const LoraModule* const> slots,
                const LoraBatchPlan& plan, LoraForm form) {
  check_batch(x, y, slots, plan, "apply_lora");
  for (const LoraSegment& s : plan.segments) {
    PERSONA_CHECK_CODE(unsupported, !slots[static_cast<std::size_t>(s.slot)]->dora(),
                       "slot {} is a DoRA module, whose output depends on the base weight: use lora_linear", s.slot);
  }
  run_plan(x, y, slots, plan, form, {});
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

void lora_linear(TensorView<const float> x, const LoraMatrix& base, TensorView<float> y,
                 std::span<const LoraModule* const> slots, const LoraBatchPlan& plan) {
  check_batch(x, y, slots, plan, "lora_linear");
  PERSONA_CHECK_CODE(shape_mismatch, base.rows() == y.dim(1) && base.cols() == x.dim(1),
                     "the base weight is [{}, {}] but x is {} and y is {}", base.rows(), base.cols(),
                     x.shape().to_string(), y.shape().to_string());
  base.multiply(x, y);
  // DoRA slots scale each output row by m / ||W + scale B A||, from the (dequantized) base weight.
  std::vector<Tensor<float>> row_scales;
  Tensor<float> base_f32;
  for (const LoraSegment& s : plan.segments) {
    const LoraModule& m = *slots[static_cast<std::size_t>(s.slot)];
    if (!m.dora()) continue;
    if (base_f32.empty()) base_f32 = base.to_f32();
    row_scales.resize(slots.size());
    row_scales[static_cast<std::size_t>(s.slot)] = dora_row_scale(m, base_f32);
  }
  run_plan(x, y, slots, plan, LoraForm::automatic, row_scales);
}

}  // namespace persona
