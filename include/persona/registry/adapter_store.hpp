// AdapterStore: every tenant's adapters on disk (the NVMe tier), one persona adapter file per version,
// written crash-safely so that a crash at any moment leaves the old version or the new one, never a torn
// file. Several stores (in this process or others on the machine) may share one root: each new version
// number is taken by exactly one put, and every write is announced in the root's generation file, which
// AdapterRegistry watches. The RAM tier and ownership checks on use are AdapterRegistry's.
#pragma once

#include "persona/core/ids.hpp"
#include "persona/lora/lora_adapter.hpp"
#include "persona/lora/lora_quantize.hpp"
#include "persona/quant/quant_spec.hpp"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace persona {

namespace detail {
class StoreGenerations;  // src/registry/store_generations.hpp
}  // namespace detail

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
  // Opens (creating if needed) the store under `root`: root/tenants/<tenant>/<adapter>/v<version>.persona,
  // root/generations. Error io_error if the folder or the generation file cannot be made.
  explicit AdapterStore(std::filesystem::path root, AdapterStoreConfig config = {});
  ~AdapterStore();
  AdapterStore(const AdapterStore&) = delete;
  AdapterStore& operator=(const AdapterStore&) = delete;

  // Writes a new version of adapter.id() for adapter.tenant() (kPublicTenant: open to every tenant),
  // quantized to `quantize` on the way in when given; matrices left unquantized are stored as
  // `float_storage` (f32, f16 or bf16; they read back as f32). Ids are 1..128 of [A-Za-z0-9._-], not "."
  // or ".."; anything else, or an adapter with no modules, is invalid_argument. Error io_error (disk full,
  // unwritable folder, a failed fsync) leaves every stored version as it was. New folders and the file are
  // fsynced into their parents before put returns. Of puts racing on one adapter from several stores or
  // processes, each gets its own version number (the file is created exclusively, by hard link).
  StoredAdapter put(const LoraAdapter& adapter, const std::optional<QuantSpec>& quantize = std::nullopt,
                    DType float_storage = DType::f32);

  // The latest version, or `version`. Error not_found (unknown tenant, adapter or version), corrupt_data
  // (truncated or damaged file, or one that names another tenant or id), io_error. A latest version pruned
  // by a concurrent put (keep_versions) between listing and reading is looked up again, never not_found
  // while a newer version exists.
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
  // sees every version or none (never an older one left by a half-done delete, nor after a crash). The
  // last version number is kept (tenants/<tenant>/.<adapter>.removed): a later put numbers on from it,
  // so that no version number ever names two different adapters.
  // Error not_found if it has none, io_error if the folder cannot be moved or the move made durable (the
  // adapter is then still there).
  void remove(TenantId tenant, std::string_view adapter);

  // A number that changes with every put and remove of the adapter by any store on this root, in any
  // process on this machine (and rarely with another adapter's: the table has 4096 slots). Read it before
  // looking at the store: a different value later means that what was read may be stale.
  std::uint64_t generation(TenantId tenant, std::string_view adapter) const noexcept;

  const std::filesystem::path& root() const noexcept { return root_; }

 private:
  std::filesystem::path folder(TenantId tenant, std::string_view adapter) const;
  std::filesystem::path root_;
  AdapterStoreConfig config_;
  std::unique_ptr<detail::StoreGenerations> generations_;
  std::mutex writers_;  // puts and removes of this object, one at a time
};

}  // namespace persona
