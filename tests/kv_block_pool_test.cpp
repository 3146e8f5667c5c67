// Tests of the KV cache's block allocator (internal: src/kv/block_pool.hpp): free blocks first, then
// cached ones least recently used, reference counts and the cached list.
#include "test_support.hpp"

#include <persona/core/error.hpp>

#include "kv/block_pool.hpp"

using namespace persona;

TEST_CASE("BlockPool hands out free blocks first, then evicts cached ones least recently used", "[kv]") {
  detail::BlockPool pool(4);
  std::vector<BlockId> got;
  for (int i = 0; i < 4; ++i) {
    const auto a = pool.allocate();
    CHECK_FALSE(a.evicted);
    got.push_back(a.block);
  }
  CHECK(got == std::vector<BlockId>{0, 1, 2, 3});
  CHECK(pool.allocate().block == kNoBlock);
  CHECK(pool.used() == 4);
  for (BlockId b : got) pool.set_cacheable(b, b % 2 == 0);  // 0 and 2 keep a cached prefix
  pool.release(2);
  pool.release(0);
  pool.release(1);
  CHECK(pool.free() == 1);
  CHECK(pool.cached() == 2);
  CHECK(pool.used() == 1);
  pool.retain(2);  // a hit revives 2: it leaves the cached list
  CHECK(pool.cached() == 1);
  CHECK(pool.ref_count(2) == 1);
  pool.release(2);  // now 0 is least recently used, then 2
  auto a = pool.allocate();
  CHECK(a.block == 1);  // the free one first
  CHECK_FALSE(a.evicted);
  a = pool.allocate();
  CHECK(a.block == 0);
  CHECK(a.evicted);
  a = pool.allocate();
  CHECK(a.block == 2);
  CHECK(a.evicted);
  CHECK(pool.allocate().block == kNoBlock);
  pool.release(0);
  CHECK(pool.ref_count(0) == 0);
  CHECK(pool.free() == 1);  // allocate cleared the cacheable flag
  pool.retain(1);
  CHECK(pool.release(1) == 1);
  PERSONA_REQUIRE_ERROR(detail::BlockPool(0), invalid_argument, "num_blocks is 0");
}
