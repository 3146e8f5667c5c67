// Failing system calls on purpose: this test binary defines write, fsync, link, rename, mkdir and open
// itself (fault_injection.cpp), so that persona's calls, and libstdc++'s for std::filesystem, come here
// first (as an LD_PRELOAD shim would, but linked in). Unarmed, each passes straight to the C library's.
// Armed, the chosen call fails with the chosen errno, once, after letting `skip` such calls through, and
// only on the thread that armed it. BeforeOpen runs an action just before a chosen file is opened, to put
// a race's other side at its worst moment.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace persona::test {

enum class SystemCall { write, fsync, link, rename, mkdir };

std::string_view name_of(SystemCall call) noexcept;

class InjectFault {
 public:
  InjectFault(SystemCall call, int error, int skip = 0);
  ~InjectFault();
  InjectFault(const InjectFault&) = delete;
  InjectFault& operator=(const InjectFault&) = delete;
  // Whether the fault struck (the operation reached the call).
  bool struck() const noexcept;
};

class BeforeOpen {
 public:
  // `action` runs once, on this thread, just before the first open(2) of a path ending in `suffix`.
  BeforeOpen(std::string suffix, std::function<void()> action);
  ~BeforeOpen();
  BeforeOpen(const BeforeOpen&) = delete;
  BeforeOpen& operator=(const BeforeOpen&) = delete;
  bool ran() const noexcept;
  struct Hook;  // fault_injection.cpp

 private:
  Hook* hook_;
  Hook* previous_;
};

}  // namespace persona::test
