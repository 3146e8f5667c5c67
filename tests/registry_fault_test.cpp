// The adapter store and the atomic file writers under injected I/O faults (EIO, ENOSPC at write, fsync,
// link, rename, mkdir and a folder's fsync; fault_injection.hpp): every failing step is an io_error that
// names it, and after it the store holds exactly what it held before and takes the next put.
#include "fault_injection.hpp"
#include "registry_support.hpp"
#include "test_support.hpp"

#include <persona/core/error.hpp>
#include <persona/core/file_io.hpp>
#include <persona/registry/adapter_store.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

using namespace persona;
using namespace persona::test;
namespace fs = std::filesystem;

namespace {

struct Step {
  SystemCall call;
  int skip;           // calls of that kind let through first
  const char* names;  // what the error says
};

// Only the adapter's version files, no temporary file left behind.
std::vector<std::string> files_in(const fs::path& folder) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(folder)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_CASE("A put that fails at any step leaves the stored versions as they were", "[registry]") {
  // A put of a new version: the temporary file's write and fsync, the link to its name, the folder's fsync.
  const std::vector<Step> steps = {{SystemCall::write, 0, "write failed"},
                                   {SystemCall::fsync, 0, "fsync failed"},
                                   {SystemCall::link, 0, "link failed"},
                                   {SystemCall::fsync, 1, "cannot sync the folder"}};
  for (const Step& step : steps) {
    for (const int error : {EIO, ENOSPC}) {
      INFO(name_of(step.call) << " (after " << step.skip << ") fails with " << std::strerror(error));
      TempFolder folder;
      AdapterStore store(folder.path);
      store.put(tagged_adapter("style", 1, 1.0f));
      {
        InjectFault fault(step.call, error, step.skip);
        PERSONA_REQUIRE_ERROR(store.put(tagged_adapter("style", 1, 2.0f)), io_error,
                              fmt::format("{}: {}", step.names, std::strerror(error)));
        CHECK(fault.struck());
      }
      CHECK(store.versions(1, "style") == std::vector<AdapterVersion>{1});
      CHECK(tag_of(store.get(1, "style")) == 1.0f);
      CHECK(files_in(folder.path / "tenants" / "1" / "style") ==
            std::vector<std::string>{"v00000000000000000001.persona"});
      CHECK(store.put(tagged_adapter("style", 1, 3.0f)).version == 2);
      CHECK(tag_of(store.get(1, "style")) == 3.0f);
    }
  }
}

TEST_CASE("A put that makes folders fsyncs each into its parent and reports their faults", "[registry]") {
  for (const Step& step : {Step{SystemCall::mkdir, 0, "tenants/9: cannot create the folder"},
                           Step{SystemCall::fsync, 0, "tenants: cannot sync the folder"},       // tenants/9's entry
                           Step{SystemCall::fsync, 1, "tenants/9: cannot sync the folder"}}) {  // style's entry
    INFO(name_of(step.call) << " (after " << step.skip << ")");
    TempFolder folder;
    AdapterStore store(folder.path);
    {
      InjectFault fault(step.call, ENOSPC, step.skip);
      PERSONA_REQUIRE_ERROR(store.put(tagged_adapter("style", 9, 1.0f)), io_error, step.names);
      CHECK(fault.struck());
    }
    CHECK(store.versions(9, "style").empty());
    CHECK(store.list(9).empty());
    CHECK(store.put(tagged_adapter("style", 9, 2.0f)).version == 1);
    CHECK(tag_of(store.get(9, "style")) == 2.0f);
  }
}

TEST_CASE("A remove that fails leaves the adapter whole", "[registry]") {
  // A remove writes the last version number beside the folder (write, fsync, rename, the folder's fsync),
  // renames the folder away, then syncs the tenant folder.
  for (const Step& step :
       {Step{SystemCall::rename, 0, "rename failed"}, Step{SystemCall::fsync, 1, "cannot sync the folder"},
        Step{SystemCall::rename, 1, "cannot move it away"}, Step{SystemCall::fsync, 2, "cannot sync the folder"}}) {
    INFO(name_of(step.call) << " (after " << step.skip << ")");
    TempFolder folder;
    AdapterStore store(folder.path);
    store.put(tagged_adapter("style", 1, 1.0f));
    store.put(tagged_adapter("style", 1, 2.0f));
    {
      InjectFault fault(step.call, EIO, step.skip);
      PERSONA_REQUIRE_ERROR(store.remove(1, "style"), io_error, step.names);
      CHECK(fault.struck());
    }
    CHECK(store.versions(1, "style") == std::vector<AdapterVersion>{1, 2});
    CHECK(tag_of(store.get(1, "style")) == 2.0f);
    store.remove(1, "style");
    CHECK(store.versions(1, "style").empty());
    CHECK(store.put(tagged_adapter("style", 1, 3.0f)).version == 3);  // numbered on from the removed ones
  }
}

TEST_CASE("write_file_atomically reports every failing step, a folder's fsync included", "[core]") {
  const std::vector<Step> steps = {{SystemCall::write, 0, "write failed"},
                                   {SystemCall::fsync, 0, "fsync failed"},
                                   {SystemCall::rename, 0, "rename failed"},
                                   {SystemCall::fsync, 1, "cannot sync the folder"}};
  for (const Step& step : steps) {
    INFO(name_of(step.call) << " (after " << step.skip << ")");
    TempFolder folder;
    const fs::path path = folder.path / "index.bin";
    const std::vector<std::byte> old_bytes(100, std::byte{1}), new_bytes(200, std::byte{2});
    write_file_atomically(path, old_bytes);
    {
      InjectFault fault(step.call, ENOSPC, step.skip);
      PERSONA_REQUIRE_ERROR(write_file_atomically(path, new_bytes), io_error, step.names);
      CHECK(fault.struck());
    }
    // Before the rename the old file stands; after it (only the folder's fsync failed) the new one does,
    // possibly not durably, which the error said.
    CHECK(read_file(path) == (step.skip == 1 ? new_bytes : old_bytes));
    CHECK(files_in(folder.path) == std::vector<std::string>{"index.bin"});
  }
}

TEST_CASE("create_file_atomically never replaces a file and undoes a creation it cannot make durable", "[core]") {
  TempFolder folder;
  const fs::path path = folder.path / "v1";
  const std::vector<std::byte> first(10, std::byte{1}), second(20, std::byte{2});
  CHECK(create_file_atomically(path, first));
  CHECK_FALSE(create_file_atomically(path, second));  // the name is taken: nothing written
  CHECK(read_file(path) == first);
  const fs::path other = folder.path / "v2";
  {
    InjectFault fault(SystemCall::fsync, EIO, 1);
    PERSONA_REQUIRE_ERROR(create_file_atomically(other, second), io_error, "cannot sync the folder");
  }
  CHECK_FALSE(fs::exists(other));
  CHECK(files_in(folder.path) == std::vector<std::string>{"v1"});
}

TEST_CASE("A get whose latest version is pruned between listing and opening reads the newer one", "[registry]") {
  // keep_versions = 1: the put that the get races prunes the very file the get listed. The put runs at the
  // worst moment, just before the get opens the file.
  TempFolder folder;
  AdapterStore store(folder.path, {.keep_versions = 1});
  store.put(tagged_adapter("style", 1, 1.0f));
  {
    BeforeOpen race("v00000000000000000001.persona", [&] { store.put(tagged_adapter("style", 1, 2.0f)); });
    CHECK(tag_of(store.get(1, "style")) == 2.0f);
    CHECK(race.ran());
  }
  CHECK(store.versions(1, "style") == std::vector<AdapterVersion>{2});
  // A version asked for by number that goes meanwhile is not_found, naming the file.
  BeforeOpen gone("v00000000000000000002.persona", [&] { store.put(tagged_adapter("style", 1, 3.0f)); });
  PERSONA_REQUIRE_ERROR(store.get(1, "style", 2), not_found,
                        "v00000000000000000002.persona was removed while being read");
  CHECK(gone.ran());
}
