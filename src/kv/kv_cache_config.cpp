#include "persona/kv/kv_cache_config.hpp"

#include "persona/core/error.hpp"

#include <bit>

namespace persona {

std::size_t KvCacheConfig::block_bytes() const noexcept {
  const std::size_t per_token_head = head_dim * size_of(storage) + (storage == DType::i8 ? sizeof(float) : 0);
  return 2 * layers * block_size * kv_heads * per_token_head;
}

void KvCacheConfig::validate() const {
  PERSONA_CHECK(layers > 0 && layers <= 1024, "layers is {}; expected 1..1024", layers);
  PERSONA_CHECK(kv_heads > 0 && kv_heads <= 1024, "kv_heads is {}; expected 1..1024", kv_heads);
  PERSONA_CHECK(head_dim > 0 && head_dim <= kMaxHeadDim, "head_dim is {}; expected 1..{}", head_dim, kMaxHeadDim);
  PERSONA_CHECK(std::has_single_bit(block_size) && block_size <= 65536,
                "block_size is {}; expected a power of two in 1..65536 (positions split into block and slot by "
                "shift and mask)",
                block_size);
  PERSONA_CHECK(storage == DType::f32 || storage == DType::f16 || storage == DType::bf16 || storage == DType::i8,
                "storage is {}; expected f32, f16, bf16 or i8", name_of(storage));
  PERSONA_CHECK(layout == KvLayout::nhd || layout == KvLayout::hnd, "layout {} is not nhd or hnd",
                static_cast<int>(layout));
  PERSONA_CHECK(num_blocks > 0 || byte_budget >= block_bytes(),
                "neither num_blocks nor a byte_budget of at least one block ({} bytes) given; byte_budget is {}",
                block_bytes(), byte_budget);
}

}  // namespace persona
