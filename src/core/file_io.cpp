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
#include <fstream>
#include <string>

namespace persona {

void write_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes) {
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
    ::unlink(temp_name.c_str());
    PERSONA_THROW(io_error, "{}: close failed: {}", path.string(), std::strerror(errno));
  }
  if (::rename(temp_name.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp_name.c_str());
    PERSONA_THROW(io_error, "{}: rename failed: {}", path.string(), std::strerror(err));
  }
  // The rename is durable only once the folder's entry is on disk.
  const int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

std::vector<std::byte> read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) PERSONA_THROW(io_error, "{}: cannot open: {}", path.string(), std::strerror(errno));
  const std::streamoff size = in.tellg();
  std::vector<std::byte> bytes(static_cast<std::size_t>(size));
  in.seekg(0);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), size)) {
    PERSONA_THROW(io_error, "{}: cannot read {} bytes", path.string(), size);
  }
  return bytes;
}

std::shared_ptr<MappedFile> MappedFile::open(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) PERSONA_THROW(io_error, "{}: cannot open: {}", path.string(), std::strerror(errno));
  struct stat info {};
  if (fstat(fd, &info) != 0) {
    const int err = errno;
    ::close(fd);
    PERSONA_THROW(io_error, "{}: cannot stat: {}", path.string(), std::strerror(err));
  }
  std::shared_ptr<MappedFile> file(new MappedFile());
  file->size_ = static_cast<std::size_t>(info.st_size);
  if (file->size_ > 0) {
    void* address = mmap(nullptr, file->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (address == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      PERSONA_THROW(io_error, "{}: cannot map {} bytes: {}", path.string(), file->size_, std::strerror(err));
    }
    file->address_ = static_cast<std::byte*>(address);
  }
  ::close(fd);
  return file;
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
