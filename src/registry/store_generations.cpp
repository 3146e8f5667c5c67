#include "registry/store_generations.hpp"

#include "persona/core/error.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

namespace persona::detail {
namespace {

constexpr std::size_t kBytes = StoreGenerations::kSlots * sizeof(std::uint64_t);
static_assert(std::atomic_ref<std::uint64_t>::is_always_lock_free, "counters shared between processes");

}  // namespace

StoreGenerations::StoreGenerations(const std::filesystem::path& root) {
  const std::filesystem::path path = root / "generations";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0)
    PERSONA_THROW(io_error, "{}: cannot open the store's generation file: {}", path.string(), std::strerror(errno));
  struct stat info {};
  // Every opener grows a new file to the full table (concurrent ones alike); nobody ever shrinks it.
  bool ok = ::fstat(fd, &info) == 0 && S_ISREG(info.st_mode) &&
            (static_cast<std::size_t>(info.st_size) >= kBytes || ::ftruncate(fd, static_cast<off_t>(kBytes)) == 0);
  void* address = ok ? ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
  const int err = errno;
  ::close(fd);
  if (address == MAP_FAILED) {
    PERSONA_THROW(io_error, "{}: cannot map the store's generation file{}: {}", path.string(),
                  ok ? "" : " (not a regular file, or it cannot grow)", std::strerror(err));
  }
  table_ = static_cast<std::uint64_t*>(address);
}

StoreGenerations::~StoreGenerations() { ::munmap(table_, kBytes); }

std::uint64_t* StoreGenerations::slot(TenantId tenant, std::string_view adapter) const noexcept {
  // FNV-1a over the tenant's bytes and the id, folded: spreads the slots; nothing depends on its strength.
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (int i = 0; i < 8; ++i) h = (h ^ ((tenant >> (8 * i)) & 0xff)) * 0x100000001b3ull;
  for (const char c : adapter) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  h ^= h >> 29;
  return table_ + (h % kSlots);
}

std::uint64_t StoreGenerations::read(TenantId tenant, std::string_view adapter) const noexcept {
  return std::atomic_ref<std::uint64_t>(*slot(tenant, adapter)).load(std::memory_order_acquire);
}

void StoreGenerations::bump(TenantId tenant, std::string_view adapter) noexcept {
  std::atomic_ref<std::uint64_t>(*slot(tenant, adapter)).fetch_add(1, std::memory_order_acq_rel);
}

}  // namespace persona::detail
