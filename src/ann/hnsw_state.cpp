// HnswState's storage: construction, growth and writing a vector's rows.
#include "ann/hnsw_state.hpp"

#include <algorithm>

namespace persona::detail {

HnswState::HnswState(const HnswConfig& c)
    : config(c),
      max_links0(2 * c.M),
      max_links(c.M),
      level_scale(1.0 / std::log(static_cast<double>(c.M))),
      has_f32(c.storage == VectorStorage::f32 || c.keep_f32),
      has_codes(c.storage == VectorStorage::int8),
      code_stride(int8_row_bytes(c.dim)),
      rng(c.seed) {}

Slot HnswState::owned_slot(VectorLabel label, TenantId tenant, const char* function) const {
  const auto it = slots.find(label);
  PERSONA_CHECK_AT(function, not_found, it != slots.end(), "label {} is not in the index", label);
  PERSONA_CHECK_AT(function, permission_denied, it->second.tenant == tenant, "label {} is not tenant {}'s", label,
                   tenant);
  return it->second.slot;
}

const float* HnswState::vector_of(Slot s, std::vector<float>& buffer) const {
  if (has_f32) return f32_row(s);
  buffer.resize(config.dim);
  decode_int8_row(code_row(s), config.dim, buffer.data());
  return buffer.data();
}

void HnswState::reserve(std::size_t size) {
  std::unique_lock lock(growth);
  if (size <= capacity) return;
  resize_arrays(std::max({size, 2 * capacity, std::size_t{64}}));
}

void HnswState::resize_arrays(std::size_t grown, bool rows) {
  if (has_f32 && rows) f32.resize(grown * config.dim);
  if (has_codes && rows) codes.resize(grown * code_stride);
  links0.resize(grown * stride0());
  upper.resize(grown);
  levels.resize(grown, 0);
  labels.resize(grown, 0);
  tenants.resize(grown, 0);
  upper.shrink_to_fit();
  levels.shrink_to_fit();
  labels.shrink_to_fit();
  tenants.shrink_to_fit();
  auto new_locks = std::make_unique<SpinLock[]>(grown);
  auto new_deleted = std::make_unique<std::atomic<bool>[]>(grown);
  for (std::size_t i = 0; i < std::min(capacity, grown); ++i) new_deleted[i].store(deleted[i].load());
  for (std::size_t i = capacity; i < grown; ++i) new_deleted[i].store(false);
  locks = std::move(new_locks);
  deleted = std::move(new_deleted);
  capacity = grown;
}

void HnswState::write_vector(Slot s, const float* v) noexcept {
  if (has_f32) std::copy_n(v, config.dim, f32.data() + static_cast<std::size_t>(s) * config.dim);
  if (has_codes) encode_int8_row(v, config.dim, codes.data() + static_cast<std::size_t>(s) * code_stride);
}

}  // namespace persona::detail
