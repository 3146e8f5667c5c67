// What the registry's tests share: adapters whose every element encodes a tag (so a torn or mixed file
// shows), the check of that tag, and a temporary folder.
#pragma once

#include <persona/lora/lora_adapter.hpp>

#include <fmt/format.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

namespace persona::test {

// An adapter whose every element encodes `tag`: A[i] = tag + i / 2^20, B likewise, so that a torn or
// mixed file would show.
inline LoraAdapter tagged_adapter(const std::string& id, TenantId tenant, float tag, std::size_t width = 256,
                                  std::size_t rank = 8) {
  LoraAdapter adapter(id, tenant);
  for (std::size_t layer = 0; layer < 2; ++layer) {
    for (const char* module : {"self_attn.q_proj", "self_attn.v_proj"}) {
      Tensor<float> a({rank, width}), b({width, rank});
      for (std::size_t i = 0; i < a.numel(); ++i) a.data()[i] = tag + static_cast<float>(i) / (1 << 20);
      for (std::size_t i = 0; i < b.numel(); ++i) b.data()[i] = -tag - static_cast<float>(i) / (1 << 20);
      adapter.add({layer, module}, LoraModule(LoraMatrix(std::move(a)), LoraMatrix(std::move(b)), 16.0f));
    }
  }
  return adapter;
}

// Whether every element agrees with the tag in the first one (no assertions: usable from any thread).
inline bool whole(const LoraAdapter& adapter, float& tag) {
  const Tensor<float>* first = adapter.modules().begin()->second.a().f32();
  if (first == nullptr) return false;
  tag = first->data()[0];
  for (const auto& [target, module] : adapter.modules()) {
    const Tensor<float>* a = module.a().f32();
    const Tensor<float>* b = module.b().f32();
    if (a == nullptr || b == nullptr) return false;
    for (std::size_t i = 0; i < a->numel(); ++i) {
      if (a->data()[i] != tag + static_cast<float>(i) / (1 << 20)) return false;
    }
    for (std::size_t i = 0; i < b->numel(); ++i) {
      if (b->data()[i] != -tag - static_cast<float>(i) / (1 << 20)) return false;
    }
  }
  return true;
}

// The tag of a stored adapter, after checking that every element agrees with it.
inline float tag_of(const LoraAdapter& adapter) {
  float tag = 0.0f;
  REQUIRE(whole(adapter, tag));
  return tag;
}

}  // namespace persona::test
