// Files from someone else: read_file and MappedFile::open take regular files only (symlinks followed to
// regular files, as the Hugging Face cache uses them), refuse FIFOs without blocking and devices without
// reading them, and honour a size cap.
#include "test_support.hpp"

#include <persona/core/file_io.hpp>

#include <sys/stat.h>
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
