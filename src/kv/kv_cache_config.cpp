#include "persona/kv/kv_cache_config.hpp"

#include "persona/core/error.hpp"

#include <bit>

namespace persona {

std::size_t block_bytes(const KvCacheConfig& config) {
  const std::size_t per_token_head =
      config.head_dim * size_of(config.storage) + (config.storage == DType::i8 ? sizeof(float) : 0);
  return 2 * config.layers * config.block_size * config.kv_heads * per_token_head;
}

void validate(const KvCacheConfig& config) {
  PERSONA_CHECK(config.layers > 0 && config.layers <= 1024, "layers is {}; expected 1..1024", config.layers);
  PERSONA_CHECK(config.kv_heads > 0 && config.kv_heads <= 1024, "kv_heads is {}; expected 1..1024", config.kv_heads);
  PERSONA_CHECK(config.head_dim > 0 && config.head_dim <= kMaxHeadDim, "head_dim is {}; expected 1..{}",
                config.head_dim, kMaxHeadDim);
  PERSONA_CHECK(std::has_single_bit(config.block_size) && config.block_size <= 65536,
                "block_size is {}; expected a power of two in 1..65536 (positions split into block and slot by "
                "shift and mask)",
                config.block_size);
  PERSONA_CHECK(config.storage == DType::f32 || config.storage == DType::f16 || config.storage == DType::bf16 ||
                    config.storage == DType::i8,
                "storage is {}; expected f32, f16, bf16 or i8", name_of(config.storage));
  PERSONA_CHECK(config.layout == KvLayout::nhd || config.layout == KvLayout::hnd, "layout {} is not nhd or hnd",
                static_cast<int>(config.layout));
  PERSONA_CHECK(config.num_blocks > 0 || config.byte_budget >= block_bytes(config),
                "neither num_blocks nor a byte_budget of at least one block ({} bytes) given; byte_budget is {}",
                block_bytes(config), config.byte_budget);
}

}  // namespace persona
