#include "persona/registry/adapter_store.hpp"

#include "persona/core/error.hpp"
#include "persona/core/file_io.hpp"
#include "persona/io/persona_adapter.hpp"
#include "registry/store_generations.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
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

// Where a remove leaves the last version it removed, beside the adapter's folder: a put after a remove
// numbers on from it, so that a version number never names two different adapters (the KV prefix cache
// keys K/V by it).
fs::path floor_file(const fs::path& adapter_folder) {
  return adapter_folder.parent_path() / fmt::format(".{}.removed", adapter_folder.filename().string());
}

// The last version removed (0 if none).
AdapterVersion read_floor(const fs::path& adapter_folder) {
  const fs::path path = floor_file(adapter_folder);
  std::error_code error;
  if (!fs::exists(path, error)) return 0;
  const std::vector<std::byte> bytes = read_file(path, 32);
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  AdapterVersion version = 0;
  const auto [at, failed] = std::from_chars(text.data(), text.data() + text.size(), version);
  PERSONA_CHECK_CODE(corrupt_data, failed == std::errc{} && at == text.data() + text.size(), "{}: not a version number",
                     path.string());
  return version;
}

// A process-wide count that names removed folders uniquely, with the pid, among all stores.
std::atomic<std::uint64_t> removals{0};

}  // namespace

AdapterStore::AdapterStore(fs::path root, AdapterStoreConfig config) : root_(std::move(root)), config_(config) {
  PERSONA_CHECK(config_.keep_versions >= 1, "keep_versions is 0; expected at least 1");
  create_folders_durably(root_ / "tenants");
  generations_ = std::make_unique<detail::StoreGenerations>(root_);
  std::error_code error;
  // What a remove moved away and did not get to delete (a crash); the folder itself stays for others.
  for (fs::directory_iterator it(root_ / "removed", error), end; !error && it != end; it.increment(error)) {
    std::error_code ignored;
    fs::remove_all(it->path(), ignored);
  }
}

AdapterStore::~AdapterStore() = default;

std::uint64_t AdapterStore::generation(TenantId tenant, std::string_view adapter) const noexcept {
  return generations_->read(tenant, adapter);
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
  fs::path path;
  std::optional<LoraAdapter> found;
  // The latest version may be pruned by a put between listing and reading: then a newer one exists, and
  // the listing is taken again. A put per attempt is needed to fail one, so a few attempts suffice.
  constexpr int kAttempts = 16;
  for (int attempt = 1; !found; ++attempt) {
    path = path_of(tenant, adapter, version);
    try {
      found = read_persona_adapter(path);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::io_error || fs::exists(path)) throw;
      if (version || attempt == kAttempts) {  // that version was pruned or the adapter removed meanwhile
        PERSONA_THROW(not_found, "adapter '{}' of tenant {}: {} was removed while being read", adapter, tenant,
                      path.string());
      }
    }
  }
  LoraAdapter loaded = std::move(*found);
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
  const std::vector<std::byte> file = encode_persona_adapter(quantize ? written : adapter, float_storage);
  std::lock_guard lock(writers_);
  create_folders_durably(dir);
  // A new name per version, written to a temporary file, fsynced and linked to its name: readers of the
  // old version never see the new one half-written, a crash leaves at most a stray temporary file, and
  // of writers racing for one number (other stores on this root, other processes) exactly one gets it;
  // the others take the next.
  for (int attempt = 1;; ++attempt) {
    const std::vector<AdapterVersion> before = versions(adapter.tenant(), adapter.id());
    stored.version = (before.empty() ? read_floor(dir) : before.back()) + 1;
    stored.path = dir / file_name(stored.version);
    try {
      if (create_file_atomically(stored.path, file)) break;
    } catch (const Error& e) {
      // Readers elsewhere may have seen a name that was then undone: have them look again.
      generations_->bump(adapter.tenant(), adapter.id());
      // The folder moved away under us (a remove by another writer): make it again and retry.
      std::error_code missing;
      if (e.code() != ErrorCode::io_error || fs::is_directory(dir, missing) || attempt >= 1000) throw;
      create_folders_durably(dir);
      continue;
    }
    PERSONA_CHECK_CODE(io_error, attempt < 1000, "{}: 1000 other writers took the next version first", dir.string());
  }
  stored.file_bytes = file.size();
  generations_->bump(adapter.tenant(), adapter.id());
  // Then the oldest versions beyond the kept ones go (listed again: other writers may have added some).
  const std::vector<AdapterVersion> after = versions(adapter.tenant(), adapter.id());
  std::error_code error;
  for (std::size_t i = 0; i + config_.keep_versions < after.size(); ++i) fs::remove(dir / file_name(after[i]), error);
  return stored;
}

void AdapterStore::remove(TenantId tenant, std::string_view adapter) {
  std::lock_guard lock(writers_);
  const std::vector<AdapterVersion> stored = versions(tenant, adapter);
  if (stored.empty()) PERSONA_THROW(not_found, "tenant {} has no adapter '{}'", tenant, adapter);
  // One rename takes every version at once (deleting file by file let a reader see an older version
  // for a moment, and a crash keep it); the pid and a count keep the name unique across processes.
  const fs::path dir = folder(tenant, adapter), removed_root = root_ / "removed";
  const fs::path removed = removed_root / fmt::format("{}.{}.{}.{}", tenant, adapter, ::getpid(), ++removals);
  // First the floor for later puts, durably: a crash after the rename must not restart the numbers.
  const std::string last = std::to_string(stored.back());
  write_file_atomically(floor_file(dir), std::as_bytes(std::span(last.data(), last.size())));
  std::error_code error;
  fs::create_directories(removed_root, error);
  if (!error) fs::rename(dir, removed, error);
  if (error == std::errc::no_such_file_or_directory) {
    PERSONA_THROW(not_found, "tenant {} has no adapter '{}' (removed meanwhile by another writer)", tenant, adapter);
  }
  if (error) PERSONA_THROW(io_error, "{}: cannot move it away to remove it: {}", dir.string(), error.message());
  generations_->bump(tenant, adapter);
  try {
    sync_folder(dir.parent_path());
  } catch (const Error& e) {
    // Not durably gone: put it back, so that an error always means "not removed".
    std::error_code back;
    fs::rename(removed, dir, back);
    generations_->bump(tenant, adapter);
    if (back) {  // a put by another writer made the folder anew meanwhile: say what the state is
      PERSONA_THROW(io_error,
                    "{}: removed, but the removal may not survive a crash ({}), and it could not be undone: {}",
                    dir.string(), e.message(), back.message());
    }
    throw;
  }
  fs::remove_all(removed, error);  // what is left after a crash goes at the next open
}

}  // namespace persona
