// The store's generation file, <root>/generations: a table of counters in shared memory (a mapped file)
// that every AdapterStore on the root, in any process on the machine, bumps after each put or remove of
// an adapter, in the slot the adapter's name hashes to. A reader notes the slot's value before it looks at
// the store; a later different value means that what it read may be stale (a write by this or another
// process, or, rarely, of another adapter sharing the slot), and it looks again.
#pragma once

#include "persona/core/ids.hpp"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string_view>

namespace persona::detail {

class StoreGenerations {
 public:
  static constexpr std::size_t kSlots = 4096;  // 32 KiB: a false share per write among 4096 adapters

  // Maps <root>/generations, creating it (zeros) if needed. Error io_error.
  explicit StoreGenerations(const std::filesystem::path& root);
  ~StoreGenerations();
  StoreGenerations(const StoreGenerations&) = delete;
  StoreGenerations& operator=(const StoreGenerations&) = delete;

  std::uint64_t read(TenantId tenant, std::string_view adapter) const noexcept;
  void bump(TenantId tenant, std::string_view adapter) noexcept;

 private:
  std::uint64_t* slot(TenantId tenant, std::string_view adapter) const noexcept;
  std::uint64_t* table_ = nullptr;
};

}  // namespace persona::detail
