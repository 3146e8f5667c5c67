// The prefix cache's chained block hash: a full block is found by the hash of its tokens, the hash of the
// block before it, and the key it was computed under (tenant, adapter version, or public).
#pragma once

#include "persona/core/ids.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

namespace persona::detail {

// Mixed with the cache's seed, the parent hash of a sequence's first block.
inline constexpr std::uint64_t kRootHash = 0x243f6a8885a308d3ull;

// 64x64 -> 128 multiply folded to 64 bits: the mixing step of the chained block hash.
inline std::uint64_t mix(std::uint64_t a, std::uint64_t b) noexcept {
  const __uint128_t product = static_cast<__uint128_t>(a ^ 0xa0761d6478bd642full) * (b ^ 0xe7037ed1a0b428dbull);
  return static_cast<std::uint64_t>(product) ^ static_cast<std::uint64_t>(product >> 64);
}

// The prefix-cache key a block is stored under besides its tokens: the tenant and the adapter version
// its K/V were computed with, or public (no tenant) with the adapter version of the shared prefix.
// Its salt (a digest of the request's cache_salt, 0 for none) keeps blocks apart that are otherwise equal.
struct BlockKey {
  bool is_public = true;
  TenantId tenant = kPublicTenant;
  AdapterVersionId adapter = {};
  std::uint64_t salt = 0;
  friend bool operator==(const BlockKey&, const BlockKey&) = default;
};

// A digest of a cache salt under the cache's seed; 0 stands for no salt, so a salt never digests to it.
inline std::uint64_t salt_digest(std::string_view salt, std::uint64_t seed) noexcept {
  if (salt.empty()) return 0;
  std::uint64_t h = mix(seed, salt.size());
  for (std::size_t i = 0; i < salt.size(); i += 8) {
    std::uint64_t word = 0;
    std::memcpy(&word, salt.data() + i, std::min<std::size_t>(8, salt.size() - i));
    h = mix(h, word);
  }
  return h == 0 ? 1 : h;
}

// A seed from the system's random source, so that the chain hash of one cache cannot be predicted.
std::uint64_t random_hash_seed();

inline std::uint64_t chain_hash(std::uint64_t parent, const BlockKey& key,
                                std::span<const std::int32_t> tokens) noexcept {
  const std::uint64_t adapter = mix(mix(key.adapter.key, key.adapter.version), key.salt);
  std::uint64_t h = mix(parent, key.is_public ? mix(1, adapter) : mix(key.tenant, adapter + 2));
  std::size_t i = 0;
  for (; i + 2 <= tokens.size(); i += 2) {
    const std::uint64_t pair = static_cast<std::uint32_t>(tokens[i]) |
                               (static_cast<std::uint64_t>(static_cast<std::uint32_t>(tokens[i + 1])) << 32);
    h = mix(h, pair);
  }
  if (i < tokens.size()) h = mix(h, static_cast<std::uint32_t>(tokens[i]));
  return mix(h, tokens.size());
}

}  // namespace persona::detail
