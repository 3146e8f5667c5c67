// Files from someone else: read_file and MappedFile::open take regular files only (symlinks followed to
// regular files, as the Hugging Face cache uses them), refuse FIFOs without blocking and devices without
// reading them, and honour a size cap.
#include "test_support.hpp"

#include <persona/core/file_io.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

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
