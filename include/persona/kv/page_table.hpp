// A batch of sequences' block lists in the compressed-row form FlashInfer's paged kernels take.
#pragma once

#include <cstdint>
#include <vector>

namespace persona {

struct PageTable {
  std::vector<std::int32_t> indptr;         // [batch + 1]: sequence i's blocks are indices[indptr[i], indptr[i+1])
  std::vector<std::int32_t> indices;        // [indptr[batch]]: block ids, in token order
  std::vector<std::int32_t> last_page_len;  // [batch]: tokens in each sequence's last block (1..block_size)
};

}  // namespace persona
