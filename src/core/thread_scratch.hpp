// ThreadScratch<T>: a scratch object per thread, kept across calls so that a warm kernel call allocates
// nothing. A call that finds this thread's object in use (the thread, waiting inside the parallel loop of
// an earlier call, ran a task that calls again) gets a fresh object of its own instead.
#pragma once

namespace persona::detail {

template <class T>
class ThreadScratch {
 public:
  ThreadScratch() : kept_(!in_use()) {
    if (kept_) in_use() = true;
  }
  ~ThreadScratch() {
    if (kept_) in_use() = false;
  }
  ThreadScratch(const ThreadScratch&) = delete;
  ThreadScratch& operator=(const ThreadScratch&) = delete;

  T& get() noexcept { return kept_ ? kept() : fresh_; }

 private:
  static T& kept() noexcept {
    thread_local T object;
    return object;
  }
  static bool& in_use() noexcept {
    thread_local bool flag = false;
    return flag;
  }
  bool kept_;
  T fresh_{};
};

}  // namespace persona::detail
