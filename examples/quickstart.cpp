// The smallest persona program: shows the SIMD level in use, runs a few decoder ops at that level and
// checks each against its scalar reference. Exits non-zero if any check fails.
#include <persona/persona.hpp>

#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <random>

namespace {

float max_abs_diff(persona::TensorView<const float> a, persona::TensorView<const float> b) {
  float worst = 0.0f;
  const auto x = a.span(), y = b.span();
  for (std::size_t i = 0; i < x.size(); ++i) worst = std::fmax(worst, std::fabs(x[i] - y[i]));
  return worst;
}

}  // namespace

int run() {
  using namespace persona;
  fmt::print("persona {} | {} | {} threads\n", PERSONA_VERSION_STRING, cpu_features().to_string(), num_threads());

  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto random_tensor = [&](Shape shape) {
    Tensor<float> t(shape);
    for (float& v : t.span()) v = normal(rng);
    return t;
  };

  // One decoder-style step: normalize, project with a [out, in] weight, rotate, gate.
  const std::size_t tokens = 4, hidden = 256, heads = 4, head_dim = 64;
  Tensor<float> x = random_tensor({tokens, hidden});
  Tensor<float> norm_weight = random_tensor({hidden});
  Tensor<float> w = random_tensor({heads * head_dim, hidden});  // torch.nn.Linear layout [out, in]

  int failures = 0;
  auto check = [&](const char* what, float error, float tolerance) {
    const bool ok = error <= tolerance;
    failures += ok ? 0 : 1;
    fmt::print("  {:<28} max |fast - reference| = {:.3g}  (tolerance {:.1g})  {}\n", what, error, tolerance,
               ok ? "ok" : "FAILED");
  };

  Tensor<float> normed({tokens, hidden}), normed_ref({tokens, hidden});
  rmsnorm(x, norm_weight.span(), 1e-5f, normed);
  rmsnorm_ref(x, norm_weight.span(), 1e-5f, normed_ref);
  check("rmsnorm [4, 256]", max_abs_diff(normed, normed_ref), 1e-4f);

  Tensor<float> q({tokens, heads * head_dim}), q_ref({tokens, heads * head_dim});
  matmul(normed_ref, w, q, Transpose::yes);
  matmul_ref(normed_ref, w, q_ref, Transpose::yes);
  check("matmul [4,256] x [256,256]^T", max_abs_diff(q, q_ref), 1e-3f);

  TensorView<float> q_heads(q.data(), {tokens, heads, head_dim});
  TensorView<float> q_ref_heads(q_ref.data(), {tokens, heads, head_dim});
  rope(q_heads, 7);
  rope_ref(q_ref_heads, 7);
  check("rope (positions 7..10)", max_abs_diff(q, q_ref), 1e-3f);

  Tensor<float> gated({tokens, heads * head_dim}), gated_ref({tokens, heads * head_dim});
  swiglu(q_ref, q_ref, gated);
  swiglu_ref(q_ref, q_ref, gated_ref);
  check("swiglu", max_abs_diff(gated, gated_ref), 1e-4f);

  Tensor<float> probs({tokens, heads * head_dim}), probs_ref({tokens, heads * head_dim});
  softmax(q_ref, probs);
  softmax_ref(q_ref, probs_ref);
  check("softmax", max_abs_diff(probs, probs_ref), 1e-6f);

  std::printf("%s\n", failures == 0 ? "quickstart: all checks passed" : "quickstart: CHECKS FAILED");
  return failures == 0 ? 0 : 1;
}

int main() {
  try {
    return run();
  } catch (const persona::Error& e) {
    std::fprintf(stderr, "quickstart: %s\n", e.what());
    return 2;
  }
}
