// Files from someone else: read_file and MappedFile::open take regular files only (symlinks followed to
// regular files, as the Hugging Face cache uses them), refuse FIFOs without blocking and devices without
// reading them, and honour a size cap.
#include "test_support.hpp"

#include <persona/core/file_io.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

using namespace persona;
using persona::test::TempFolder;

TEST_CASE("read_file and MappedFile::open take regular files only, capped", "[core]") {
  const TempFolder folder("file_io");
  const auto regular = folder.path / "data.bin";
  const std::vector<std::byte> bytes(100, std::byte{7});
  write_file_atomically(regular, bytes);
  CHECK(read_file(regular) == bytes);
  CHECK(MappedFile::open(regular)->bytes().size() == 100);
  // A symlink to a regular file is read through (the Hugging Face cache's snapshots are symlinks).
  std::filesystem::create_symlink(regular, folder.path / "link.bin");
  CHECK(read_file(folder.path / "link.bin") == bytes);
  CHECK(MappedFile::open(folder.path / "link.bin")->bytes().size() == 100);
  // A FIFO in a file's place: refused at once (a blocking open would wait for a writer forever).
  const auto fifo = folder.path / "adapter_model.safetensors";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  PERSONA_REQUIRE_ERROR(read_file(fifo), io_error, "not a regular file (a FIFO)");
  PERSONA_REQUIRE_ERROR(MappedFile::open(fifo), io_error, "not a regular file (a FIFO)");
  // A symlink to /dev/zero (endless) and a directory.
  std::filesystem::create_symlink("/dev/zero", folder.path / "zero.bin");
  PERSONA_REQUIRE_ERROR(read_file(folder.path / "zero.bin"), io_error, "not a regular file (a character device)");
  PERSONA_REQUIRE_ERROR(MappedFile::open(folder.path / "zero.bin"), io_error, "character device");
  PERSONA_REQUIRE_ERROR(read_file(folder.path), io_error, "not a regular file (a directory)");
  // The cap.
  CHECK(read_file(regular, 100) == bytes);
  PERSONA_REQUIRE_ERROR(read_file(regular, 99), io_error, "100 bytes is more than the 99 bytes allowed here");
  PERSONA_REQUIRE_ERROR(read_file(folder.path / "missing.bin"), io_error, "missing.bin: cannot open");
}

TEST_CASE("A mapped file truncated by someone else is SIGBUS on the lost pages, as documented", "[core]") {
  // The contract MappedFile documents (docs/security.md): persona maps only files it owns or that must be
  // mapped (model checkpoints); files of others that are read whole (PEFT adapters) are copied instead.
  TempFolder folder("mapped");
  const auto path = folder.path / "file.bin";
  write_file_atomically(path, std::vector<std::byte>(1 << 16, std::byte{7}));
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    struct sigaction bus {};
    bus.sa_handler = [](int) { _exit(42); };
    sigaction(SIGBUS, &bus, nullptr);
    const std::shared_ptr<MappedFile> mapped = MappedFile::open(path);
    if (static_cast<int>(mapped->bytes()[100]) != 7) _exit(1);
    if (::truncate(path.c_str(), 0) != 0) _exit(2);
    volatile std::byte lost = mapped->bytes()[1 << 15];  // a page past the new end
    (void)lost;
    _exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 42);
}

namespace {

// The resident kilobytes of the mapping that starts at `address`, from /proc/self/smaps.
std::size_t mapping_rss_kb(const void* address) {
  std::ifstream smaps("/proc/self/smaps");
  const auto start = reinterpret_cast<std::uintptr_t>(address);
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    std::uintptr_t from = 0, to = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &from, &to) == 2) {
      inside = from == start;
      continue;
    }
    std::size_t kb = 0;
    if (inside && std::sscanf(line.c_str(), "Rss: %zu kB", &kb) == 1) return kb;
  }
  return ~std::size_t{0};
}

}  // namespace

TEST_CASE("MappedFile::release drops copied pages from the resident set and keeps the bytes", "[core]") {
  const TempFolder folder("release");
  const auto path = folder.path / "file.bin";
  std::vector<std::byte> bytes(1 << 20);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>(i * 31 % 251);
  write_file_atomically(path, bytes);
  const std::shared_ptr<MappedFile> mapped = MappedFile::open(path);
  const std::span<const std::byte> all = mapped->bytes();
  std::size_t sum = 0;
  for (std::size_t i = 0; i < all.size(); i += 4096) sum += static_cast<std::size_t>(all[i]);
  CHECK(sum > 0);
  const std::size_t before = mapping_rss_kb(all.data());
  REQUIRE(before >= 1000);  // every page touched
  // The middle 512 KiB (plus a ragged edge: only whole pages inside the range go).
  mapped->release(all.subspan(100, (1 << 19) + 5000));
  const std::size_t after = mapping_rss_kb(all.data());
  CHECK(after <= before - 512);
  CHECK(after >= before - 520);
  // Ranges outside the mapping are ignored; the released bytes read back unchanged.
  mapped->release(std::span<const std::byte>(bytes.data(), bytes.size()));
  CHECK(std::equal(all.begin(), all.end(), bytes.begin()));
}
