// Large zeroed allocations aligned to 2 MiB and, on Linux, marked for transparent huge pages: the KV pool
// and the vector indexes read rows scattered over hundreds of MiB, and with 4 KiB pages nearly every row
// would also be a TLB miss. Allocations under 2 MiB stay small (64-byte aligned): an empty index costs
// kilobytes.
#pragma once

#include "persona/core/error.hpp"

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace persona::detail {

class HugePageMemory {
 public:
  static constexpr std::size_t kHugePage = std::size_t{2} << 20;

  HugePageMemory() = default;
  explicit HugePageMemory(std::size_t bytes) : bytes_(bytes) {
    if (bytes == 0) return;
    const std::size_t alignment = bytes >= kHugePage ? kHugePage : 64;
    const std::size_t rounded = (bytes + alignment - 1) / alignment * alignment;
    void* p = std::aligned_alloc(alignment, rounded);
    PERSONA_CHECK_CODE(capacity_exhausted, p != nullptr, "cannot allocate {} bytes", rounded);
#if defined(MADV_HUGEPAGE)
    if (alignment == kHugePage) (void)madvise(p, rounded, MADV_HUGEPAGE);  // advice only
#endif
    std::memset(p, 0, rounded);
    data_.reset(static_cast<std::byte*>(p));
  }

  std::byte* data() noexcept { return data_.get(); }
  const std::byte* data() const noexcept { return data_.get(); }
  std::size_t bytes() const noexcept { return bytes_; }

 private:
  struct Free {
    void operator()(std::byte* p) const noexcept { std::free(p); }
  };
  std::unique_ptr<std::byte, Free> data_;
  std::size_t bytes_ = 0;
};

}  // namespace persona::detail
