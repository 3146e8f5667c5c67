// FlatIndex::save and FlatIndex::load: the flat index file of docs/formats.md ("Flat index file,
// version 2"): a header, then labels, tenants and vectors as the index holds them, then a checksum.
#include "ann/binary_io.hpp"
#include "persona/ann/flat_index.hpp"
#include "persona/core/file_io.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>

namespace persona {
namespace {

constexpr char kMagic[8] = {'P', 'R', 'S', 'N', 'F', 'L', 'A', 'T'};
constexpr std::uint32_t kFormatVersion = 2;
// magic, version, metric, dim, count
constexpr std::size_t kHeaderBytes = sizeof(kMagic) + 2 * sizeof(std::uint32_t) + 2 * sizeof(std::uint64_t);

}  // namespace

void FlatIndex::save(const std::filesystem::path& path) const {
  detail::BinaryWriter w;
  w.put(kMagic);
  w.put(kFormatVersion);
  w.put(static_cast<std::uint32_t>(metric_));
  w.put(static_cast<std::uint64_t>(dim_));
  w.put(static_cast<std::uint64_t>(labels_.size()));
  w.put_array(labels_.data(), labels_.size());
  w.put_array(tenants_.data(), tenants_.size());
  w.put_array(vectors_.data(), vectors_.size());
  w.put(file_checksum(w.bytes()));
  write_file_atomically(path, w.bytes());
}

FlatIndex FlatIndex::load(const std::filesystem::path& path) {
  std::vector<std::byte> bytes = read_file(path);
  PERSONA_CHECK_CODE(corrupt_data, bytes.size() >= kHeaderBytes + sizeof(std::uint64_t),
                     "{}: too short for a flat index file ({} bytes)", path.string(), bytes.size());
  // The reader sees everything before the checksum, so a short body is a truncated field.
  const std::span<std::byte> body = std::span(bytes).first(bytes.size() - sizeof(std::uint64_t));
  std::uint64_t stored = 0;
  std::memcpy(&stored, bytes.data() + body.size(), sizeof(stored));
  detail::BinaryReader r(body, path, "load");
  char magic[8];
  r.get_array(magic, 8, "magic");
  PERSONA_CHECK_CODE(corrupt_data, std::memcmp(magic, kMagic, 8) == 0, "{}: not a persona flat index (bad magic)",
                     path.string());
  const auto version = r.get<std::uint32_t>("version");
  detail::check_index_version(version, kFormatVersion, path, "load");
  PERSONA_CHECK_CODE(corrupt_data, file_checksum(body) == stored, "{}: checksum mismatch", path.string());
  const auto metric = r.get<std::uint32_t>("metric");
  const auto dim = r.get<std::uint64_t>("dim");
  const auto count = r.get<std::uint64_t>("count");
  PERSONA_CHECK_CODE(corrupt_data, metric <= 2, "{}: metric {} unknown", path.string(), metric);
  PERSONA_CHECK_CODE(corrupt_data, dim != 0 && dim <= 65536, "{}: dim {} out of range (1..65536)", path.string(), dim);
  // Every vector takes its label, tenant and row in the file: a count beyond it is corrupt, not an
  // allocation. (dim <= 65536, so the row size cannot overflow.)
  const std::size_t row_bytes = sizeof(VectorLabel) + sizeof(TenantId) + dim * sizeof(float);
  PERSONA_CHECK_CODE(corrupt_data, count <= r.remaining() / row_bytes && count * row_bytes == r.remaining(),
                     "{}: count {} of dim {} does not match the {} bytes after the header", path.string(), count, dim,
                     r.remaining());
  FlatIndex index(dim, static_cast<Metric>(metric));
  index.labels_.resize(count);
  index.tenants_.resize(count);
  index.vectors_.resize(count * dim);
  r.get_array(index.labels_.data(), count, "labels");
  r.get_array(index.tenants_.data(), count, "tenants");
  r.get_array(index.vectors_.data(), count * dim, "vectors");
  // A NaN would break the ordering every search relies on.
  for (std::size_t i = 0; i < index.vectors_.size(); ++i) {
    PERSONA_CHECK_CODE(corrupt_data, std::isfinite(index.vectors_[i]), "{}: vector {} element {} is {}", path.string(),
                       i / dim, i % dim, index.vectors_[i]);
  }
  index.slots_.reserve(count);
  for (std::size_t slot = 0; slot < count; ++slot) {
    const bool unique = index.slots_.emplace(index.labels_[slot], slot).second;
    PERSONA_CHECK_CODE(corrupt_data, unique, "{}: label {} appears twice", path.string(), index.labels_[slot]);
  }
  return index;
}

}  // namespace persona
