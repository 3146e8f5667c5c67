// Each tenant's live slots in an HNSW index: what a tenant-filtered search scans exactly when the tenant
// is small, kept so that adding or removing a slot is O(1).
#pragma once

#include "ann/hnsw_links.hpp"
#include "persona/core/ids.hpp"

#include <algorithm>
#include <cstddef>
#include <unordered_map>
#include <vector>

namespace persona::detail {

// Not thread-safe: the index guards it with its book_mutex.
class TenantLists {
 public:
  void add(Slot slot, TenantId tenant) {
    std::vector<Slot>& list = by_tenant_[tenant];
    if (position_.size() <= slot) position_.resize(std::max<std::size_t>(slot + 1, 2 * position_.size()));
    position_[slot] = static_cast<Slot>(list.size());
    list.push_back(slot);
  }
  // `slot` must be in `tenant`'s list.
  void remove(Slot slot, TenantId tenant) {
    const auto it = by_tenant_.find(tenant);
    std::vector<Slot>& list = it->second;
    const Slot at = position_[slot];
    list[at] = list.back();
    position_[list[at]] = at;
    list.pop_back();
    if (list.empty()) by_tenant_.erase(it);
  }
  // A copy: the caller scans it after letting go of the lock.
  std::vector<Slot> slots_of(TenantId tenant) const {
    const auto it = by_tenant_.find(tenant);
    return it == by_tenant_.end() ? std::vector<Slot>{} : it->second;
  }
  std::vector<Slot> all_slots() const {
    std::vector<Slot> out;
    for (const auto& [tenant, slots] : by_tenant_) out.insert(out.end(), slots.begin(), slots.end());
    return out;
  }
  void clear() {
    by_tenant_.clear();
    position_ = {};
  }
  std::size_t position_capacity() const noexcept { return position_.capacity(); }

 private:
  std::unordered_map<TenantId, std::vector<Slot>> by_tenant_;
  std::vector<Slot> position_;  // [slot]: its index in its tenant's list
};

}  // namespace persona::detail
