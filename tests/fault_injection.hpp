// Failing system calls on purpose: this test binary defines write, fsync, link, rename, mkdir and open
// itself (the definitions below), so that persona's calls, and libstdc++'s for std::filesystem, come here
// first (as an LD_PRELOAD shim would, but linked in). Unarmed, each passes straight to the C library's.
// Armed, the chosen call fails with the chosen errno, once, after letting `skip` such calls through, and
// only on the thread that armed it. BeforeOpen runs an action just before a chosen file is opened, to put
// a race's other side at its worst moment.
//
// It defines those C functions for the whole binary: include it in one source file of one test binary
// only (registry_fault_test.cpp).
#pragma once

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
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
  struct Hook;  // below

 private:
  Hook* hook_;
  Hook* previous_;
};

}  // namespace persona::test

// ---- The definitions (this header is included once per binary) ----
namespace persona::test {
namespace {

struct Plan {
  bool armed = false;
  SystemCall call = SystemCall::write;
  int error = 0;
  int skip = 0;
  bool struck = false;
};
thread_local Plan plan;

}  // namespace

struct BeforeOpen::Hook {
  std::string suffix;
  std::function<void()> action;
  bool ran = false;
};

namespace {

thread_local BeforeOpen::Hook* open_hook = nullptr;

void before_open(const char* path) {
  BeforeOpen::Hook* hook = open_hook;
  if (hook == nullptr || hook->ran || !std::string_view(path).ends_with(hook->suffix)) return;
  hook->ran = true;  // first: the action may open files itself
  hook->action();
}

// Whether this call fails now (then errno is set).
bool strike(SystemCall call) noexcept {
  if (!plan.armed || plan.struck || plan.call != call) return false;
  if (plan.skip-- > 0) return false;
  plan.struck = true;
  errno = plan.error;
  return true;
}

template <class Function>
Function real(const char* name) noexcept {
  void* symbol = dlsym(RTLD_NEXT, name);
  if (symbol == nullptr) {
    std::fprintf(stderr, "fault_injection: no %s after this binary's\n", name);
    std::abort();
  }
  return reinterpret_cast<Function>(symbol);
}

}  // namespace

std::string_view name_of(SystemCall call) noexcept {
  switch (call) {
    case SystemCall::write: return "write";
    case SystemCall::fsync: return "fsync";
    case SystemCall::link: return "link";
    case SystemCall::rename: return "rename";
    case SystemCall::mkdir: return "mkdir";
  }
  return "?";
}

InjectFault::InjectFault(SystemCall call, int error, int skip) { plan = Plan{true, call, error, skip, false}; }
InjectFault::~InjectFault() { plan.armed = false; }
bool InjectFault::struck() const noexcept { return plan.struck; }

BeforeOpen::BeforeOpen(std::string suffix, std::function<void()> action)
    : hook_(new Hook{std::move(suffix), std::move(action), false}), previous_(open_hook) {
  open_hook = hook_;
}
BeforeOpen::~BeforeOpen() {
  open_hook = previous_;
  delete hook_;
}
bool BeforeOpen::ran() const noexcept { return hook_->ran; }

}  // namespace persona::test

using persona::test::before_open;
using persona::test::real;
using persona::test::strike;
using persona::test::SystemCall;

extern "C" {

ssize_t write(int fd, const void* buffer, size_t bytes) {
  static const auto next = real<ssize_t (*)(int, const void*, size_t)>("write");
  return strike(SystemCall::write) ? -1 : next(fd, buffer, bytes);
}

int fsync(int fd) {
  static const auto next = real<int (*)(int)>("fsync");
  return strike(SystemCall::fsync) ? -1 : next(fd);
}

int link(const char* from, const char* to) {
  static const auto next = real<int (*)(const char*, const char*)>("link");
  return strike(SystemCall::link) ? -1 : next(from, to);
}

int rename(const char* from, const char* to) {
  static const auto next = real<int (*)(const char*, const char*)>("rename");
  return strike(SystemCall::rename) ? -1 : next(from, to);
}

int open(const char* path, int flags, ...) {
  static const auto next = real<int (*)(const char*, int, ...)>("open");
  mode_t mode = 0;
  if ((flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE) {
    va_list arguments;
    va_start(arguments, flags);
    mode = static_cast<mode_t>(va_arg(arguments, int));
    va_end(arguments);
  }
  before_open(path);
  return next(path, flags, mode);
}

int mkdir(const char* path, mode_t mode) {
  static const auto next = real<int (*)(const char*, mode_t)>("mkdir");
  return strike(SystemCall::mkdir) ? -1 : next(path, mode);
}

}  // extern "C"