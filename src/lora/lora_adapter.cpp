#include "persona/lora/lora_adapter.hpp"

#include <algorithm>

namespace persona {

void LoraAdapter::add(LoraTarget target, LoraModule module) {
  PERSONA_CHECK(!modules_.contains(target), "adapter '{}' already has a module for layer {} '{}'", id_, target.layer,
                target.module);
  modules_.emplace(std::move(target), std::move(module));
}

const LoraModule* LoraAdapter::find(std::size_t layer, std::string_view module) const noexcept {
  const auto it = std::find_if(modules_.begin(), modules_.end(), [&](const auto& entry) {
    return entry.first.layer == layer && entry.first.module == module;
  });
  return it == modules_.end() ? nullptr : &it->second;
}

std::size_t LoraAdapter::bytes() const noexcept {
  std::size_t total = 0;
  for (const auto& [target, module] : modules_) total += module.bytes();
  return total;
}

}  // namespace persona
