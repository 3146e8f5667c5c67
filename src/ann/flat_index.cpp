// FlatIndex: adds, removes, the exact scan and its memory. Its file format is in flat_index_io.cpp.
#include "persona/ann/flat_index.hpp"

#include "ann/vector_math.hpp"
#include "persona/core/cpu_features.hpp"

#include <exception>

namespace persona {

FlatIndex::FlatIndex(std::size_t dim, Metric metric) : dim_(dim), metric_(metric) {
  PERSONA_CHECK(dim > 0 && dim <= 65536, "dim is {}; expected 1..65536", dim);
  PERSONA_CHECK(metric == Metric::l2 || metric == Metric::inner_product || metric == Metric::cosine,
                "unknown metric {}", static_cast<int>(metric));
}

void FlatIndex::add(VectorLabel label, std::span<const float> vector, TenantId tenant) {
  PERSONA_CHECK(!slots_.contains(label), "label {} is already in the index", label);
  const std::size_t slot = labels_.size();
  vectors_.resize((slot + 1) * dim_);
  try {
    detail::prepare_vector(metric_, dim_, vector, vectors_.data() + slot * dim_, "add", "vector");
  } catch (...) {
    vectors_.resize(slot * dim_);
    throw;
  }
  labels_.push_back(label);
  tenants_.push_back(tenant);
  slots_.emplace(label, slot);
}

void FlatIndex::add(std::span<const VectorLabel> labels, TensorView<const float> vectors,
                    std::span<const TenantId> tenants) {
  PERSONA_CHECK_CODE(
      shape_mismatch,
      vectors.rank() == 2 && vectors.dim(0) == labels.size() && vectors.dim(1) == dim_ && vectors.is_contiguous(),
      "vectors have shape {}; expected contiguous [{}, {}]", vectors.shape().to_string(), labels.size(), dim_);
  PERSONA_CHECK_CODE(shape_mismatch, tenants.size() == labels.size(), "{} tenants for {} labels", tenants.size(),
                     labels.size());
  // Every row that can go in does, as HnswIndex's parallel batch does; the first refusal is rethrown.
  std::exception_ptr failure;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    try {
      add(labels[i], {vectors.data() + i * dim_, dim_}, tenants[i]);
    } catch (...) {
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
}

bool FlatIndex::contains(VectorLabel label, TenantId tenant) const noexcept {
  const auto it = slots_.find(label);
  return it != slots_.end() && tenants_[it->second] == tenant;
}

void FlatIndex::remove(VectorLabel label, TenantId tenant) {
  const auto it = slots_.find(label);
  PERSONA_CHECK_CODE(not_found, it != slots_.end(), "label {} is not in the index", label);
  PERSONA_CHECK_CODE(permission_denied, tenants_[it->second] == tenant, "label {} is not tenant {}'s", label, tenant);
  // Move the last vector into the hole.
  const std::size_t slot = it->second, last = labels_.size() - 1;
  slots_.erase(it);
  if (slot != last) {
    std::copy_n(vectors_.data() + last * dim_, dim_, vectors_.data() + slot * dim_);
    labels_[slot] = labels_[last];
    tenants_[slot] = tenants_[last];
    slots_[labels_[slot]] = slot;
  }
  labels_.pop_back();
  tenants_.pop_back();
  vectors_.resize(last * dim_);
}

std::vector<Neighbor> FlatIndex::search(std::span<const float> query, std::size_t k, const SearchFilter& filter) const {
  PERSONA_CHECK(k > 0, "k is 0; expected at least 1");
  std::vector<float> q(dim_);
  detail::prepare_vector(metric_, dim_, query, q.data(), "search", "query");
  const auto& kernels = persona::detail::distance_kernels(active_isa_level());
  detail::TopK best(k);
  for (std::size_t slot = 0; slot < labels_.size(); ++slot) {
    if (filter.tenant() && tenants_[slot] != *filter.tenant()) continue;
    if (filter.predicate() && !filter.predicate()(labels_[slot])) continue;
    best.offer({labels_[slot], detail::distance(kernels, metric_, q.data(), vectors_.data() + slot * dim_, dim_)});
  }
  return std::move(best).sorted();
}

std::size_t FlatIndex::memory_bytes() const {
  // A map entry: its node (key, value, next pointer) and its share of the bucket array.
  const std::size_t map_entry = sizeof(VectorLabel) + sizeof(std::size_t) + 2 * sizeof(void*);
  return vectors_.capacity() * sizeof(float) + labels_.capacity() * sizeof(VectorLabel) +
         tenants_.capacity() * sizeof(TenantId) + slots_.size() * map_entry + sizeof(*this);
}

}  // namespace persona
