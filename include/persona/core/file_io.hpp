// Writing a file so that a crash leaves the old version or the new one, never a torn file, and the
// checksum persona's file formats store.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <span>
#include <vector>

namespace persona {

// Replaces `path` with `bytes` atomically (temporary file, fsync, rename, fsync of the folder). Error
// io_error naming the path and the failing step; the old file is then still in place, unless only the
// folder's fsync failed (the new file is in place, but may not survive a crash).
void write_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes);
// Creates `path` with `bytes` unless the name exists, atomically and exclusively, also against other
// processes: temporary file, fsync, a hard link to the name, fsync of the folder. False (nothing written)
// when the name exists. Error io_error naming the path and the failing step; if it is the folder's fsync,
// the new file is removed again, so that an error always means "not created". Needs a file system with
// hard links (ext4, xfs, btrfs, tmpfs, overlayfs).
bool create_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes);
// Creates the folder and its missing parents, each fsynced into its parent so that the new entries
// survive a crash. Error io_error naming the folder.
void create_folders_durably(const std::filesystem::path& folder);
// fsync of a folder: makes the renames, links and removals in it durable. Error io_error.
void sync_folder(const std::filesystem::path& folder);

// The whole file. Error io_error naming the path when it cannot be read, is not a regular file (symlinks
// are followed to regular files only: never a FIFO, a device or a directory), is larger than
// `max_bytes`, or shrinks while it is read.
std::vector<std::byte> read_file(const std::filesystem::path& path,
                                 std::size_t max_bytes = std::numeric_limits<std::size_t>::max());

// A file mapped into memory, private and copy-on-write: writes through bytes() change this process's
// pages, never the file. Unmapped when the last owner lets go.
class MappedFile {
 public:
  // Error io_error naming the path when it cannot be opened or mapped, or is not a regular file (as
  // read_file). An empty file maps to no bytes. The file must keep its size while mapped: reading a page
  // past a truncation is SIGBUS. persona's own writers never truncate (they replace files by rename).
  static std::shared_ptr<MappedFile> open(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  std::span<std::byte> bytes() const noexcept { return {address_, size_}; }
  // Drops the pages wholly inside `range` (a part of bytes()) from the process's resident memory: a later
  // read faults them in again from the file (the page cache). For bytes a loader has copied and will not
  // read again; a page written since mapping would lose the write (the mapping is private).
  void release(std::span<const std::byte> range) const noexcept;

 private:
  MappedFile() = default;
  std::byte* address_ = nullptr;
  std::size_t size_ = 0;
};

// The checksum persona's file formats store: XXH3-64 (seed 0) of the bytes, from xxHash (Debian's
// libxxhash-dev, used header-only), a hash whose every output bit depends on every input bit.
std::uint64_t file_checksum(std::span<const std::byte> bytes) noexcept;
// The same over the concatenation of `pieces`, without copying them together.
std::uint64_t file_checksum(std::span<const std::span<const std::byte>> pieces) noexcept;

}  // namespace persona
