// Writing a file so that a crash leaves the old version or the new one, never a torn file, and the
// checksum persona's file formats store.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

namespace persona {

// Replaces `path` with `bytes` atomically (temporary file, fsync, rename, fsync of the folder). Error
// io_error naming the path and the failing step.
void write_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes);

// The whole file; Error io_error naming the path when it cannot be read.
std::vector<std::byte> read_file(const std::filesystem::path& path);

// FNV-1a over 64-bit little-endian words (the last word zero-padded), then the length mixed in.
std::uint64_t persona_checksum(std::span<const std::byte> bytes) noexcept;

}  // namespace persona
