// A host program using persona as a user would: one include, one target.
#include <persona/persona.hpp>

#include <cstdio>

int main() {
  persona::Tensor<float> x({2, 8});
  for (std::size_t i = 0; i < x.numel(); ++i) x.data()[i] = static_cast<float>(i);
  persona::Tensor<float> probs({2, 8});
  persona::softmax(x, probs);
  float sum = 0.0f;
  for (std::size_t i = 0; i < 8; ++i) sum += probs(1, i);
  if (sum < 0.999f || sum > 1.001f) return 1;
  std::printf("persona consumer ok: %s, version %s\n", persona::cpu_features().to_string().c_str(),
              PERSONA_VERSION_STRING);
  return 0;
}
