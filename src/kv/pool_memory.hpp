// The KV pool's storage: one zeroed allocation aligned to 2 MiB and, on Linux, marked for transparent huge
// pages. A head's rows are a page apart in the [block, slot, head, dim] layout, so with 4 KiB pages every
// token read by attention would also be a TLB miss.
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

class PoolMemory {
 public:
  static constexpr std::size_t kHugePage = std::size_t{2} << 20;

  PoolMemory() = default;
  explicit PoolMemory(std::size_t bytes) : bytes_(bytes) {
    if (bytes == 0) return;
    const std::size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    void* p = std::aligned_alloc(kHugePage, rounded);
    PERSONA_CHECK_CODE(capacity_exhausted, p != nullptr, "cannot allocate {} bytes for the KV pool", rounded);
#if defined(MADV_HUGEPAGE)
    (void)madvise(p, rounded, MADV_HUGEPAGE);  // advice only: without it the pool still works
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
