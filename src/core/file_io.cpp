#include "persona/core/file_io.hpp"

#include "persona/core/error.hpp"

// xxHash header-only: its functions are inlined here, so users of persona never link libxxhash.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <string>

namespace persona {

namespace {

// `bytes` in a new temporary file next to `path`, fsynced and closed; returns its name. Error io_error.
std::string write_temporary(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  const std::filesystem::path folder = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  std::string temp_name = (folder / fmt::format(".{}.tmp-XXXXXX", path.filename().string())).string();
  const int fd = mkstemp(temp_name.data());
  if (fd < 0)
    PERSONA_THROW(io_error, "{}: cannot create a temporary file in {}: {}", path.string(), folder.string(),
                  std::strerror(errno));
  auto fail = [&](const char* what) {
    const int err = errno;
    ::close(fd);
    ::unlink(temp_name.c_str());
    PERSONA_THROW(io_error, "{}: {}: {}", path.string(), what, std::strerror(err));
  };
  std::size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write failed");
    }
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) fail("fsync failed");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(temp_name.c_str());
    PERSONA_THROW(io_error, "{}: close failed: {}", path.string(), std::strerror(err));
  }
  return temp_name;
}

std::filesystem::path folder_of(const std::filesystem::path& path) {
  return path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
}

}  // namespace

void sync_folder(const std::filesystem::path& folder) {
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    PERSONA_THROW(io_error, "{}: cannot sync the folder: {}", folder.string(), std::strerror(err));
  }
  ::close(fd);
}

void write_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  const std::string temp_name = write_temporary(path, bytes);
  if (::rename(temp_name.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp_name.c_str());
    PERSONA_THROW(io_error, "{}: rename failed: {}", path.string(), std::strerror(err));
  }
  sync_folder(folder_of(path));  // the rename is durable only once the folder's entry is on disk
}

bool create_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  const std::string temp_name = write_temporary(path, bytes);
  // link fails with EEXIST rather than replace: of two processes creating one name, one wins.
  const bool created = ::link(temp_name.c_str(), path.c_str()) == 0;
  const int err = errno;
  ::unlink(temp_name.c_str());
  if (!created && err == EEXIST) return false;
  if (!created) PERSONA_THROW(io_error, "{}: link failed: {}", path.string(), std::strerror(err));
  try {
    sync_folder(folder_of(path));
  } catch (const Error& e) {
    if (::unlink(path.c_str()) != 0) {
      PERSONA_THROW(io_error, "{}: created, but maybe not durably ({}), and it could not be removed again: {}",
                    path.string(), e.message(), std::strerror(errno));
    }
    throw;
  }
  return true;
}

void create_folders_durably(const std::filesystem::path& folder) {
  std::error_code error;
  if (std::filesystem::is_directory(folder, error)) return;
  const std::filesystem::path parent = folder.parent_path();
  if (!parent.empty() && parent != folder) create_folders_durably(parent);
  if (::mkdir(folder.c_str(), 0755) != 0) {
    const int err = errno;
    // Another writer made it meanwhile: sync its entry all the same (that writer may not have yet).
    if (err != EEXIST || !std::filesystem::is_directory(folder, error)) {
      PERSONA_THROW(io_error, "{}: cannot create the folder: {}", folder.string(),
                    err == EEXIST ? "something that is not a folder is in its place" : std::strerror(err));
    }
  }
  sync_folder(parent.empty() ? std::filesystem::path(".") : parent);
}

namespace {

// An open regular file and its size. Opened non-blocking, so that a FIFO in a file's place is refused,
// not waited on; symlinks are followed, but only to a regular file (never /dev/zero or a FIFO).
struct RegularFile {
  int fd = -1;
  std::size_t size = 0;
  RegularFile(const std::filesystem::path& path, std::size_t max_bytes) {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) PERSONA_THROW_AT("open", io_error, "{}: cannot open: {}", path.string(), std::strerror(errno));
    struct stat info {};
    if (fstat(fd, &info) != 0) {
      const int err = errno;
      ::close(fd);
      PERSONA_THROW_AT("open", io_error, "{}: cannot stat: {}", path.string(), std::strerror(err));
    }
    if (!S_ISREG(info.st_mode)) {
      ::close(fd);
      PERSONA_THROW_AT("open", io_error, "{}: not a regular file (a {})", path.string(),
                       S_ISDIR(info.st_mode)    ? "directory"
                       : S_ISFIFO(info.st_mode) ? "FIFO"
                       : S_ISCHR(info.st_mode)  ? "character device"
                       : S_ISBLK(info.st_mode)  ? "block device"
                                                : "socket");
    }
    size = static_cast<std::size_t>(info.st_size);
    if (size > max_bytes) {
      ::close(fd);
      PERSONA_THROW_AT("open", io_error, "{}: {} bytes is more than the {} bytes allowed here", path.string(), size,
                       max_bytes);
    }
  }
  ~RegularFile() { ::close(fd); }
  RegularFile(const RegularFile&) = delete;
  RegularFile& operator=(const RegularFile&) = delete;
};

}  // namespace

std::vector<std::byte> read_file(const std::filesystem::path& path, std::size_t max_bytes) {
  const RegularFile file(path, max_bytes);
  std::vector<std::byte> bytes(file.size);
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::pread(file.fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      PERSONA_THROW(io_error, "{}: cannot read {} bytes at offset {}: {}", path.string(), bytes.size() - done, done,
                    n == 0 ? "the file is shorter than it was (truncated while read)" : std::strerror(errno));
    }
    done += static_cast<std::size_t>(n);
  }
  return bytes;
}

std::shared_ptr<MappedFile> MappedFile::open(const std::filesystem::path& path) {
  const RegularFile regular(path, std::numeric_limits<std::size_t>::max());
  std::shared_ptr<MappedFile> file(new MappedFile());
  file->size_ = regular.size;
  if (file->size_ > 0) {
    void* address = mmap(nullptr, file->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, regular.fd, 0);
    if (address == MAP_FAILED) {
      PERSONA_THROW(io_error, "{}: cannot map {} bytes: {}", path.string(), file->size_, std::strerror(errno));
    }
    file->address_ = static_cast<std::byte*>(address);
  }
  return file;
}

void MappedFile::release(std::span<const std::byte> range) const noexcept {
  const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto base = reinterpret_cast<std::uintptr_t>(address_);
  const auto begin = reinterpret_cast<std::uintptr_t>(range.data()), end = begin + range.size();
  if (range.empty() || begin < base || end > base + size_) return;
  const std::uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;
  if (first < last) (void)madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

MappedFile::~MappedFile() {
  if (address_ != nullptr) munmap(address_, size_);
}

std::uint64_t file_checksum(std::span<const std::byte> bytes) noexcept {
  return XXH3_64bits(bytes.data(), bytes.size());
}

std::uint64_t file_checksum(std::span<const std::span<const std::byte>> pieces) noexcept {
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  for (const auto& piece : pieces) XXH3_64bits_update(&state, piece.data(), piece.size());
  return XXH3_64bits_digest(&state);
}

}  // namespace persona
