// libFuzzer target for HnswIndex::load. Input: an index file; the target recomputes its checksum (the
// last 8 bytes) first, so that the fuzzer reaches the structural checks behind it. A loaded index must
// answer searches, filtered and not; anything else must be a persona::Error. A broken promise fails
// a PERSONA_FUZZ_CHECK, which libFuzzer reports as a crash.
#include "fuzz_check.hpp"

#include <persona/ann/hnsw_index.hpp>
#include <persona/core/file_io.hpp>

#include <fmt/format.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::byte> file(reinterpret_cast<const std::byte*>(data),
                              reinterpret_cast<const std::byte*>(data) + size);
  if (file.size() >= 8) {
    const std::uint64_t sum = persona::file_checksum(std::span(file).first(file.size() - 8));
    std::memcpy(file.data() + file.size() - 8, &sum, 8);
  }
  static const std::filesystem::path path =
      std::filesystem::temp_directory_path() / fmt::format("persona_fuzz_{}.hnsw", ::getpid());
  persona::write_file_atomically(path, file);
  for (const persona::LoadMode mode : {persona::LoadMode::read, persona::LoadMode::map}) {
    try {
      const persona::HnswIndex index = persona::HnswIndex::load(path, mode);
      const std::vector<float> query(index.dim(), 0.5f);
      const auto found = index.search(query, 5, persona::SearchFilter::all_tenants());
      PERSONA_FUZZ_CHECK(found.size() <= 5 && found.size() <= index.size());
      for (std::size_t i = 1; i < found.size(); ++i) PERSONA_FUZZ_CHECK(!(found[i].distance < found[i - 1].distance));
      const auto filtered = index.search(query, 3, persona::SearchFilter::only_tenant(1));
      PERSONA_FUZZ_CHECK(filtered.size() <= 3);
      for (const auto& neighbor : filtered) PERSONA_FUZZ_CHECK(index.contains(neighbor.label, 1));
    } catch (const persona::Error&) {
    }
  }
  return 0;
}
