// A host program using persona as a user would: one include, one target. It checks what it computes
// in every build type: a wrong answer prints the failed condition and aborts, which fails the packaging
// test.
#include <persona/persona.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>

#define CONSUMER_CHECK(condition, what)                              \
  do {                                                               \
    if (!(condition)) {                                              \
      std::fprintf(stderr, "consumer: %s (%s)\n", what, #condition); \
      std::abort();                                                  \
    }                                                                \
  } while (false)

int main() {
  persona::Tensor<float> x({2, 8});
  for (std::size_t i = 0; i < x.numel(); ++i) x.data()[i] = static_cast<float>(i);
  persona::Tensor<float> probs({2, 8});
  persona::softmax(x, probs);
  for (std::size_t row = 0; row < 2; ++row) {
    float sum = 0.0f;
    for (std::size_t i = 0; i < 8; ++i) sum += probs(row, i);
    CONSUMER_CHECK(std::fabs(sum - 1.0f) < 1e-3f, "a softmax row does not sum to 1");
    for (std::size_t i = 1; i < 8; ++i) CONSUMER_CHECK(probs(row, i) > probs(row, i - 1), "softmax is not increasing");
  }
  // Rows differ by a constant shift: the same probabilities.
  for (std::size_t i = 0; i < 8; ++i)
    CONSUMER_CHECK(std::fabs(probs(0, i) - probs(1, i)) < 1e-6f, "softmax is not shift-invariant");
  std::printf("persona consumer ok: %s, version %s\n", persona::cpu_features().to_string().c_str(),
              PERSONA_VERSION_STRING);
  return 0;
}
