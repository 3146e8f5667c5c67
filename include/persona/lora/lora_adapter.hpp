// LoraAdapter: one tenant's adapter, a LoraModule per adapted (layer, module), where module names a
// linear layer inside a decoder layer as the host model does (e.g. "self_attn.q_proj", "mlp.down_proj").
#pragma once

#include "persona/core/ids.hpp"
#include "persona/lora/lora_module.hpp"

#include <compare>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace persona {

struct LoraTarget {
  std::size_t layer = 0;
  std::string module;
  friend auto operator<=>(const LoraTarget&, const LoraTarget&) = default;
};

class LoraAdapter {
 public:
  LoraAdapter() = default;
  LoraAdapter(std::string id, TenantId tenant) : id_(std::move(id)), tenant_(tenant) {}

  const std::string& id() const noexcept { return id_; }
  TenantId tenant() const noexcept { return tenant_; }
  // Where the host model keeps its decoder layers, as a module path ("model.layers" for every model
  // persona/model runs; "model.language_model.layers" or "model.decoder.layers" elsewhere): PEFT's
  // tensor names are <layers_path>.<layer>.<module>, and a model serves only adapters made for its path.
  const std::string& layers_path() const noexcept { return layers_path_; }
  void set_layers_path(std::string path) { layers_path_ = std::move(path); }

  // Error(invalid_argument) if the target already has a module.
  void add(LoraTarget target, LoraModule module);
  // nullptr when the adapter leaves that layer's module alone.
  const LoraModule* find(std::size_t layer, std::string_view module) const noexcept;
  const std::map<LoraTarget, LoraModule>& modules() const noexcept { return modules_; }
  std::size_t bytes() const noexcept;

 private:
  std::string id_;
  TenantId tenant_ = kPublicTenant;
  std::string layers_path_ = "model.layers";
  std::map<LoraTarget, LoraModule> modules_;
};

}  // namespace persona
