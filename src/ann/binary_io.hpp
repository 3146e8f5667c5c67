// Little-endian binary files as the index formats of docs/formats.md lay them out: a Writer that appends
// plain values and arrays in host order (persona's hosts are little-endian), and a Reader that checks
// every length against what is left of the file before it reads.
#pragma once

#include "persona/core/error.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <vector>

namespace persona::detail {

class BinaryWriter {
 public:
  template <class T>
  void put(const T& value) {
    const auto* p = reinterpret_cast<const std::byte*>(&value);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
  }
  template <class T>
  void put_array(const T* values, std::size_t count) {
    const auto* p = reinterpret_cast<const std::byte*>(values);
    bytes_.insert(bytes_.end(), p, p + count * sizeof(T));
  }
  // Zero bytes up to the next multiple of `alignment`.
  void align(std::size_t alignment) { bytes_.resize((bytes_.size() + alignment - 1) / alignment * alignment); }
  std::vector<std::byte>& bytes() { return bytes_; }

 private:
  std::vector<std::byte> bytes_;
};

// Reads with every length checked against what is left; a short file is corrupt_data naming the file and
// the field, reported in the name of `origin` (the public function reading, e.g. "load").
class BinaryReader {
 public:
  BinaryReader(std::span<std::byte> bytes, const std::filesystem::path& path, const char* origin)
      : bytes_(bytes), path_(path), origin_(origin) {}
  template <class T>
  T get(const char* field) {
    T value;
    std::memcpy(&value, take(sizeof(T), field), sizeof(T));
    return value;
  }
  template <class T>
  void get_array(T* out, std::size_t count, const char* field) {
    if (count != 0) std::memcpy(out, take(bytes_of<T>(count, field), field), count * sizeof(T));
  }
  // The next `count` elements in place (for mapping), checked like get_array.
  template <class T>
  T* view_array(std::size_t count, const char* field) {
    return reinterpret_cast<T*>(take(bytes_of<T>(count, field), field));
  }
  void align(std::size_t alignment, const char* field) { take((alignment - at_ % alignment) % alignment, field); }
  std::size_t remaining() const noexcept { return bytes_.size() - at_; }

 private:
  template <class T>
  std::size_t bytes_of(std::size_t count, const char* field) const {
    std::size_t bytes = 0;
    PERSONA_CHECK_AT(origin_, corrupt_data, !__builtin_mul_overflow(count, sizeof(T), &bytes),
                     "{}: {} count {} overflows", path_.string(), field, count);
    return bytes;
  }
  std::byte* take(std::size_t n, const char* field) {
    PERSONA_CHECK_AT(origin_, corrupt_data, n <= remaining(), "{}: truncated: {} needs {} bytes at offset {}, {} left",
                     path_.string(), field, n, at_, remaining());
    std::byte* p = bytes_.data() + at_;
    at_ += n;
    return p;
  }
  std::span<std::byte> bytes_;
  const std::filesystem::path& path_;
  const char* origin_;
  std::size_t at_ = 0;
};

// The index files' version rule: `current` is the one version read. Older versions carried the FNV
// checksum, which misses whole classes of damage, so they are refused (naming both versions), not trusted.
inline void check_index_version(std::uint32_t version, std::uint32_t current, const std::filesystem::path& path,
                                const char* origin) {
  if (version > current) {
    PERSONA_THROW_AT(origin, unsupported, "{}: format version {}; this build reads version {}", path.string(), version,
                     current);
  }
  PERSONA_CHECK_AT(origin, corrupt_data, version != 0, "{}: format version 0 does not exist", path.string());
  if (version < current) {
    PERSONA_THROW_AT(origin, unsupported,
                     "{}: format version {} is no longer read (its checksum misses damage); this build reads version "
                     "{}: build the index again and save it",
                     path.string(), version, current);
  }
}

}  // namespace persona::detail
