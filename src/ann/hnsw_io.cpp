// HnswIndex::save and HnswIndex::load: the index file of docs/formats.md ("HNSW index file, version 2").
#include "ann/binary_io.hpp"
#include "ann/hnsw_state.hpp"
#include "persona/core/file_io.hpp"

#include <cmath>

namespace persona {
namespace {

using detail::Slot;

constexpr char kMagic[8] = {'P', 'R', 'S', 'N', 'H', 'N', 'S', 'W'};
constexpr std::uint32_t kFormatVersion = 2;
constexpr std::size_t kFileAlignment = 64;  // of the vector sections, so that they can be mapped in place

}  // namespace

void HnswIndex::save(const std::filesystem::path& path) const {
  const detail::HnswState& st = *state_;
  std::shared_lock growth(st.growth);
  std::lock_guard lock(st.book_mutex);
  const std::size_t count = st.next_slot;
  detail::BinaryWriter w;
  w.put(kMagic);
  w.put(kFormatVersion);
  w.put(static_cast<std::uint32_t>(st.config.metric));
  w.put(static_cast<std::uint32_t>(st.config.storage));
  w.put(static_cast<std::uint32_t>(st.has_f32 ? 1 : 0));
  for (std::uint64_t v : {st.config.dim, st.config.M, st.config.ef_construction, st.config.ef_search,
                          st.config.exact_search_limit, st.config.rerank_factor}) {
    w.put(v);
  }
  w.put(st.config.seed);
  w.put(static_cast<std::uint64_t>(count));
  w.put(static_cast<std::int64_t>(st.entry.load()));
  w.put(static_cast<std::int64_t>(st.top_level.load()));
  w.align(kFileAlignment);
  if (st.has_f32) w.put_array(st.f32.data(), count * st.config.dim);
  w.align(kFileAlignment);
  if (st.has_codes) w.put_array(st.codes.data(), count * st.code_stride);
  w.put_array(st.labels.data(), count);
  w.put_array(st.tenants.data(), count);
  w.put_array(st.levels.data(), count);
  for (std::size_t i = 0; i < count; ++i) w.put(static_cast<std::uint8_t>(st.deleted[i].load() ? 1 : 0));
  w.put_array(st.links0.data(), count * st.stride0());
  for (std::size_t i = 0; i < count; ++i) {
    if (st.levels[i] > 0) w.put_array(st.upper[i].get(), st.levels[i] * st.stride());
  }
  w.put(file_checksum(w.bytes()));
  write_file_atomically(path, w.bytes());
}

HnswIndex HnswIndex::load(const std::filesystem::path& path, LoadMode mode) {
  std::shared_ptr<MappedFile> file = MappedFile::open(path);
  const std::span<std::byte> bytes = file->bytes();
  detail::BinaryReader r(bytes, path, "load");
  // magic, version and the checksum at the least
  PERSONA_CHECK_CODE(corrupt_data, bytes.size() >= sizeof(kMagic) + sizeof(std::uint32_t) + sizeof(std::uint64_t),
                     "{}: too short for an index file ({} bytes)", path.string(), bytes.size());
  std::uint64_t stored = 0;
  std::memcpy(&stored, bytes.data() + bytes.size() - sizeof(stored), sizeof(stored));
  char magic[8];
  r.get_array(magic, 8, "magic");
  PERSONA_CHECK_CODE(corrupt_data, std::memcmp(magic, kMagic, 8) == 0, "{}: not a persona HNSW index (bad magic)",
                     path.string());
  const auto version = r.get<std::uint32_t>("version");
  detail::check_index_version(version, kFormatVersion, path, "load");
  PERSONA_CHECK_CODE(corrupt_data, file_checksum(bytes.first(bytes.size() - sizeof(stored))) == stored,
                     "{}: checksum mismatch", path.string());
  HnswConfig config;
  const auto metric = r.get<std::uint32_t>("metric");
  const auto storage = r.get<std::uint32_t>("storage");
  const auto keep_f32 = r.get<std::uint32_t>("keep_f32");
  PERSONA_CHECK_CODE(corrupt_data, metric <= 2, "{}: metric {} unknown", path.string(), metric);
  PERSONA_CHECK_CODE(corrupt_data, storage <= 1 && keep_f32 <= 1, "{}: storage {} / keep_f32 {} unknown", path.string(),
                     storage, keep_f32);
  config.metric = static_cast<Metric>(metric);
  config.storage = static_cast<VectorStorage>(storage);
  config.keep_f32 = keep_f32 == 1;
  config.dim = r.get<std::uint64_t>("dim");
  config.M = r.get<std::uint64_t>("M");
  config.ef_construction = r.get<std::uint64_t>("ef_construction");
  config.ef_search = r.get<std::uint64_t>("ef_search");
  config.exact_search_limit = r.get<std::uint64_t>("exact_search_limit");
  config.rerank_factor = r.get<std::uint64_t>("rerank_factor");
  config.seed = r.get<std::uint64_t>("seed");
  PERSONA_CHECK_CODE(corrupt_data,
                     config.dim != 0 && config.dim <= 65536 && config.M >= 2 && config.M <= 100 &&
                         config.ef_construction != 0 && config.rerank_factor != 0,
                     "{}: config out of range (dim {}, M {}, ef_construction {}, rerank_factor {})", path.string(),
                     config.dim, config.M, config.ef_construction, config.rerank_factor);
  HnswIndex index(config);
  detail::HnswState& st = *index.state_;
  const auto count = r.get<std::uint64_t>("count");
  const auto entry = r.get<std::int64_t>("entry");
  const auto top = r.get<std::int64_t>("top level");
  // Every node takes its rows, label, tenant, level, flag and layer 0 links in the file: a count beyond
  // the file is corrupt, not an allocation.
  const std::size_t node_bytes = (st.has_f32 ? config.dim * sizeof(float) : 0) + (st.has_codes ? st.code_stride : 0) +
                                 sizeof(VectorLabel) + sizeof(TenantId) + 2 + st.stride0() * sizeof(Slot);
  PERSONA_CHECK_CODE(corrupt_data, count < 0xffffffffu && count <= r.remaining() / node_bytes,
                     "{}: count {} does not fit the file", path.string(), count);
  st.resize_arrays(count, mode == LoadMode::read);
  r.align(kFileAlignment, "padding");
  if (st.has_f32) {
    if (mode == LoadMode::map) {
      st.f32.map(file, r.view_array<float>(count * config.dim, "f32 vectors"), count * config.dim);
    } else {
      r.get_array(st.f32.data(), count * config.dim, "f32 vectors");
    }
  }
  r.align(kFileAlignment, "padding");
  if (st.has_codes) {
    if (mode == LoadMode::map) {
      st.codes.map(file, r.view_array<std::int8_t>(count * st.code_stride, "int8 vectors"), count * st.code_stride);
    } else {
      r.get_array(st.codes.data(), count * st.code_stride, "int8 vectors");
    }
  }
  // Vectors as add would have taken them: finite (a NaN or infinite distance leaves results unordered),
  // and int8 rows with a finite scale, offset and norm. The checksum pass has read every page already.
  for (std::size_t i = 0; i < count && st.has_f32; ++i) {
    const float* v = st.f32_row(static_cast<Slot>(i));
    for (std::size_t d = 0; d < config.dim; ++d) {
      PERSONA_CHECK_AT("load", corrupt_data, std::isfinite(v[d]), "{}: element {} of vector {} is {}", path.string(), d,
                       i, v[d]);
    }
  }
  for (std::size_t i = 0; i < count && st.has_codes; ++i) {
    const detail::Int8RowHeader h = detail::int8_row_header(st.code_row(static_cast<Slot>(i)));
    PERSONA_CHECK_AT("load", corrupt_data, std::isfinite(h.scale) && std::isfinite(h.offset) && std::isfinite(h.norm),
                     "{}: int8 vector {} has scale {}, offset {}, norm {}", path.string(), i, h.scale, h.offset,
                     h.norm);
  }
  r.get_array(st.labels.data(), count, "labels");
  r.get_array(st.tenants.data(), count, "tenants");
  r.get_array(st.levels.data(), count, "levels");
  std::vector<std::uint8_t> deleted(count);
  r.get_array(deleted.data(), count, "deleted flags");
  r.get_array(st.links0.data(), count * st.stride0(), "layer 0 links");
  // Links name existing nodes that reach the link's layer.
  const auto check_links = [&](const Slot* list, std::size_t level, std::size_t node) {
    const std::size_t limit = st.max_links_at(level);
    PERSONA_CHECK_AT("load", corrupt_data, list[0] <= limit, "{}: node {} has {} links on layer {}; at most {}",
                     path.string(), node, list[0], level, limit);
    for (std::size_t i = 0; i < list[0]; ++i) {
      PERSONA_CHECK_AT("load", corrupt_data, list[1 + i] < count, "{}: node {} links to {}; the index has {}",
                       path.string(), node, list[1 + i], count);
      PERSONA_CHECK_AT("load", corrupt_data, st.levels[list[1 + i]] >= level,
                       "{}: node {} links on layer {} to node {}, which stops at layer {}", path.string(), node, level,
                       list[1 + i], st.levels[list[1 + i]]);
    }
  };
  for (std::size_t i = 0; i < count; ++i) {
    PERSONA_CHECK_CODE(corrupt_data, st.levels[i] <= detail::kMaxLevel, "{}: node {} has level {}", path.string(), i,
                       st.levels[i]);
    check_links(st.links0.data() + i * st.stride0(), 0, i);
    if (st.levels[i] > 0) {
      st.upper[i] = std::make_unique<Slot[]>(st.levels[i] * st.stride());
      r.get_array(st.upper[i].get(), st.levels[i] * st.stride(), "upper links");
      for (std::size_t l = 0; l < st.levels[i]; ++l) check_links(st.upper[i].get() + l * st.stride(), l + 1, i);
    }
    const Slot slot = static_cast<Slot>(i);
    st.deleted[i].store(deleted[i] != 0);
    if (deleted[i] != 0) {
      st.free_slots.push_back(slot);
    } else {
      const bool unique = st.slots.emplace(st.labels[i], detail::HnswState::LabelEntry{slot, st.tenants[i]}).second;
      PERSONA_CHECK_CODE(corrupt_data, unique, "{}: label {} appears twice", path.string(), st.labels[i]);
      st.tenant_lists.add(slot, st.tenants[i]);
    }
  }
  PERSONA_CHECK_CODE(corrupt_data, r.remaining() == sizeof(stored), "{}: {} bytes after the links", path.string(),
                     r.remaining() - sizeof(stored));
  const bool entry_matches = count == 0 ? entry == -1 && top == -1
                                        : entry >= 0 && static_cast<std::uint64_t>(entry) < count &&
                                              top == st.levels[static_cast<std::size_t>(entry)];
  PERSONA_CHECK_CODE(corrupt_data, entry_matches, "{}: entry point {} at level {} does not match the nodes",
                     path.string(), entry, top);
  st.entry.store(entry);
  st.top_level.store(static_cast<int>(top));
  st.next_slot = count;
  st.live = st.slots.size();
  return index;
}

}  // namespace persona
