// AdapterHandle: a pinned, loaded adapter with the ids the serving machinery keys things by (the
// registry's numeric key, the stored version). The cache keeps the adapter resident while any copy of
// the handle lives; handles may outlive the cache and the registry.
#pragma once

#include "persona/core/ids.hpp"
#include "persona/lora/lora_adapter.hpp"

#include <memory>

namespace persona {

// One adapter version in RAM, as AdapterCache holds it.
struct LoadedAdapter {
  LoraAdapter adapter;
  AdapterKey key = kNoAdapter;
  AdapterVersion version = 0;
};

class AdapterHandle {
 public:
  AdapterHandle() = default;

  const LoraAdapter& adapter() const noexcept { return loaded_->adapter; }
  const LoraAdapter* operator->() const noexcept { return &loaded_->adapter; }
  explicit operator bool() const noexcept { return loaded_ != nullptr; }

  AdapterKey key() const noexcept { return loaded_ ? loaded_->key : kNoAdapter; }
  AdapterVersion version() const noexcept { return loaded_ ? loaded_->version : 0; }
  // What K/V computed with this adapter are keyed by in the prefix cache ({} for an empty handle).
  AdapterVersionId version_id() const noexcept { return {key(), version()}; }

 private:
  friend class AdapterCache;  // the only maker of non-empty handles
  explicit AdapterHandle(std::shared_ptr<const LoadedAdapter> loaded) : loaded_(std::move(loaded)) {}
  std::shared_ptr<const LoadedAdapter> loaded_;
};

}  // namespace persona
