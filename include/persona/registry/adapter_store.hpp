// AdapterStore: every tenant's adapters on disk (the NVMe tier), one persona adapter file per version,
// written crash-safely so that a crash at any moment leaves the old version or the new one, never a torn
// file. The RAM tier and ownership checks on use are AdapterRegistry's.
#pragma once

#include "persona/core/ids.hpp"
#include "persona/lora/lora_adapter.hpp"
#include "persona/lora/lora_quantize.hpp"
#include "persona/quant/quant_spec.hpp"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace persona {

struct AdapterStoreConfig {
  // Versions kept per adapter; older ones are deleted after a put (a reader that already opened one
  // keeps reading it: POSIX unlink leaves open files readable).
  std::size_t keep_versions = 3;
};

// What a put wrote.
struct StoredAdapter {
  AdapterVersion version = 0;
  std::filesystem::path path;
  std::size_t file_bytes = 0;
  std::map<LoraTarget, LoraQuantReport> quantization;  // per module, when put quantized on the way in
};

// What a read found: the adapter, the version it is and the file's size.
struct VersionedAdapter {
  LoraAdapter adapter;
  AdapterVersion version = 0;
  std::size_t file_bytes = 0;
};

class AdapterStore {
 public:
  // Opens (creating if needed) the store under `root`: root/tenants/<tenant>/<adapter>/v<version>.persona.
  // Error io_error if the folder cannot be created.
  explicit AdapterStore(std::filesystem::path root, AdapterStoreConfig config = {});

  // Writes a new version of adapter.id() for adapter.tenant() (kPublicTenant: open to every tenant),
  // quantized to `quantize` on the way in when given; matrices left unquantized are stored as
  // `float_storage` (f32, f16 or bf16; they read back as f32). Ids are 1..128 of [A-Za-z0-9._-], not "."
  // or ".."; anything else, or an adapter with no modules, is invalid_argument. Error io_error (disk full, unwritable
  // folder) leaves every stored version as it was.
  StoredAdapter put(const LoraAdapter& adapter, const std::optional<QuantSpec>& quantize = std::nullopt,
                    DType float_storage = DType::f32);

  // The latest version, or `version`. Error not_found (unknown tenant, adapter or version), corrupt_data
  // (truncated or damaged file, or one that names another tenant or id), io_error.
  LoraAdapter get(TenantId tenant, std::string_view adapter,
                  std::optional<AdapterVersion> version = std::nullopt) const;
  // get, with the version read and the file's size.
  VersionedAdapter read(TenantId tenant, std::string_view adapter,
                        std::optional<AdapterVersion> version = std::nullopt) const;
  // The file get would read, without reading it; Error not_found as get.
  std::filesystem::path path_of(TenantId tenant, std::string_view adapter,
                                std::optional<AdapterVersion> version = std::nullopt) const;
  // The tenant's adapter ids with at least one version, sorted; empty for an unknown tenant.
  std::vector<std::string> list(TenantId tenant) const;
  // The stored versions of one adapter, ascending; empty if none. Error io_error if the folder exists but
  // cannot be listed.
  std::vector<AdapterVersion> versions(TenantId tenant, std::string_view adapter) const;
  // Deletes every version of the adapter at once: its folder is renamed away, then deleted, so a reader
  // sees every version or none (never an older one left by a half-done delete, nor after a crash).
  // Error not_found if it has none, io_error if the folder cannot be moved.
  void remove(TenantId tenant, std::string_view adapter);

  const std::filesystem::path& root() const noexcept { return root_; }

 private:
  std::filesystem::path folder(TenantId tenant, std::string_view adapter) const;
  std::filesystem::path root_;
  AdapterStoreConfig config_;
  std::mutex writers_;          // puts and removes in this process, one at a time
  std::uint64_t removals_ = 0;  // names the removed folders of this object (under writers_)
};

}  // namespace persona
