#include "persona/registry/adapter_store.hpp"

#include "persona/core/error.hpp"
#include "persona/io/persona_adapter.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <system_error>

namespace persona {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kExtension = ".persona";

void check_id(std::string_view id) {
  const bool valid_chars = std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  });
  PERSONA_CHECK(!id.empty() && id.size() <= 128 && valid_chars && id != "." && id != "..",
                "adapter id '{}' is not 1..128 characters of [A-Za-z0-9._-] (and not . or ..)", id);
}

// "v00000000000000000042.persona" -> 42; anything else (temporary files of an interrupted put) -> none.
std::optional<AdapterVersion> version_of(const fs::path& file) {
  const std::string name = file.filename().string();
  if (name.size() <= 1 + kExtension.size() || name[0] != 'v' || !name.ends_with(kExtension)) return std::nullopt;
  AdapterVersion version = 0;
  const char* begin = name.data() + 1;
  const char* end = name.data() + name.size() - kExtension.size();
  const auto [at, error] = std::from_chars(begin, end, version);
  if (error != std::errc{} || at != end) return std::nullopt;
  return version;
}

std::string file_name(AdapterVersion version) { return fmt::format("v{:020}{}", version, kExtension); }

// Makes a rename in `folder` durable; Error io_error when the folder cannot be synced.
void fsync_folder(const fs::path& folder) {
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    PERSONA_THROW(io_error, "{}: cannot sync the folder: {}", folder.string(), std::strerror(err));
  }
  ::close(fd);
}

}  // namespace

AdapterStore::AdapterStore(fs::path root, AdapterStoreConfig config) : root_(std::move(root)), config_(config) {
  PERSONA_CHECK(config_.keep_versions >= 1, "keep_versions is 0; expected at least 1");
  std::error_code error;
  fs::create_directories(root_ / "tenants", error);
  if (error) PERSONA_THROW(io_error, "{}: cannot create the store folder: {}", root_.string(), error.message());
  // What a remove moved away and did not get to delete (a crash); the folder itself stays for others.
  for (fs::directory_iterator it(root_ / "removed", error), end; !error && it != end; it.increment(error)) {
    std::error_code ignored;
    fs::remove_all(it->path(), ignored);
  }
}

fs::path AdapterStore::folder(TenantId tenant, std::string_view adapter) const {
  check_id(adapter);
  return root_ / "tenants" / std::to_string(tenant) / std::string(adapter);
}

std::vector<AdapterVersion> AdapterStore::versions(TenantId tenant, std::string_view adapter) const {
  const fs::path dir = folder(tenant, adapter);
  std::vector<AdapterVersion> out;
  std::error_code error;
  for (fs::directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) {
    if (const auto v = version_of(it->path())) out.push_back(*v);
  }
  // No folder: no versions. Any other failure (permissions, out of file descriptors) is not "none".
  if (error && error != std::errc::no_such_file_or_directory && error != std::errc::not_a_directory) {
    PERSONA_THROW(io_error, "{}: cannot list: {}", dir.string(), error.message());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> AdapterStore::list(TenantId tenant) const {
  std::vector<std::string> out;
  std::error_code error;
  for (fs::directory_iterator it(root_ / "tenants" / std::to_string(tenant), error), end; !error && it != end;
       it.increment(error)) {
    const std::string id = it->path().filename().string();
    if (it->is_directory() && !versions(tenant, id).empty()) out.push_back(id);
  }
  std::sort(out.begin(), out.end());
  return out;
}

fs::path AdapterStore::path_of(TenantId tenant, std::string_view adapter, std::optional<AdapterVersion> version) const {
  const std::vector<AdapterVersion> stored = versions(tenant, adapter);
  if (stored.empty()) PERSONA_THROW(not_found, "tenant {} has no adapter '{}'", tenant, adapter);
  const AdapterVersion wanted = version.value_or(stored.back());
  if (!std::binary_search(stored.begin(), stored.end(), wanted)) {
    PERSONA_THROW(not_found, "adapter '{}' of tenant {} has no version {} (stored: {} to {})", adapter, tenant, wanted,
                  stored.front(), stored.back());
  }
  return folder(tenant, adapter) / file_name(wanted);
}

VersionedAdapter AdapterStore::read(TenantId tenant, std::string_view adapter,
                                    std::optional<AdapterVersion> version) const {
  const fs::path path = path_of(tenant, adapter, version);
  LoraAdapter loaded = [&] {
    try {
      return read_persona_adapter(path);
    } catch (const Error& e) {
      // Pruned or removed between listing and reading.
      if (e.code() == ErrorCode::io_error && !fs::exists(path)) {
        PERSONA_THROW(not_found, "adapter '{}' of tenant {}: {} was removed while being read", adapter, tenant,
                      path.string());
      }
      throw;
    }
  }();
  if (loaded.tenant() != tenant || loaded.id() != adapter) {
    PERSONA_THROW(corrupt_data, "{}: holds adapter '{}' of tenant {}, stored as '{}' of tenant {}", path.string(),
                  loaded.id(), loaded.tenant(), adapter, tenant);
  }
  std::error_code error;
  const auto file_bytes = static_cast<std::size_t>(fs::file_size(path, error));
  return VersionedAdapter{std::move(loaded), *version_of(path), error ? 0 : file_bytes};
}

LoraAdapter AdapterStore::get(TenantId tenant, std::string_view adapter, std::optional<AdapterVersion> version) const {
  return read(tenant, adapter, version).adapter;
}

StoredAdapter AdapterStore::put(const LoraAdapter& adapter, const std::optional<QuantSpec>& quantize,
                                DType float_storage) {
  const fs::path dir = folder(adapter.tenant(), adapter.id());
  // An adapter that adapts nothing is a mistake upstream (a PEFT folder whose tensors were all skipped).
  PERSONA_CHECK(!adapter.modules().empty(), "adapter '{}' of tenant {} has no modules; nothing to store", adapter.id(),
                adapter.tenant());
  StoredAdapter stored;
  LoraAdapter written(adapter.id(), adapter.tenant());
  if (quantize) {
    for (const auto& [target, module] : adapter.modules()) {
      LoraQuantReport report;
      written.add(target, quantize_lora(module, *quantize, QuantMethod::round_to_nearest, &report));
      stored.quantization.emplace(target, report);
    }
  }
  std::lock_guard lock(writers_);
  std::error_code error;
  fs::create_directories(dir, error);
  if (error) PERSONA_THROW(io_error, "{}: cannot create the adapter folder: {}", dir.string(), error.message());
  const std::vector<AdapterVersion> before = versions(adapter.tenant(), adapter.id());
  stored.version = before.empty() ? 1 : before.back() + 1;
  stored.path = dir / file_name(stored.version);
  // A new name per version, written to a temporary file, fsynced and renamed: readers of the old
  // version never see the new one half-written, and a crash leaves at most a stray temporary file.
  write_persona_adapter(quantize ? written : adapter, stored.path, float_storage);
  stored.file_bytes = static_cast<std::size_t>(fs::file_size(stored.path, error));
  // Then the oldest versions beyond the kept ones go.
  const std::size_t total = before.size() + 1;
  for (std::size_t i = 0; i + config_.keep_versions < total; ++i) fs::remove(dir / file_name(before[i]), error);
  return stored;
}

void AdapterStore::remove(TenantId tenant, std::string_view adapter) {
  std::lock_guard lock(writers_);
  const std::vector<AdapterVersion> stored = versions(tenant, adapter);
  if (stored.empty()) PERSONA_THROW(not_found, "tenant {} has no adapter '{}'", tenant, adapter);
  // One rename takes every version at once (deleting file by file let a reader see an older version
  // for a moment, and a crash keep it); the pid and a count keep the name unique across processes.
  const fs::path dir = folder(tenant, adapter), removed_root = root_ / "removed";
  const fs::path removed = removed_root / fmt::format("{}.{}.{}.{}", tenant, adapter, ::getpid(), ++removals_);
  std::error_code error;
  fs::create_directories(removed_root, error);
  if (!error) fs::rename(dir, removed, error);
  if (error) PERSONA_THROW(io_error, "{}: cannot move it away to remove it: {}", dir.string(), error.message());
  fsync_folder(dir.parent_path());
  fs::remove_all(removed, error);  // what is left after a crash goes at the next open
}

}  // namespace persona
