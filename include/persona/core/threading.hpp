// Thread control for every persona kernel: a process-wide thread limit, a scoped limit for one calling
// thread, and parallel_for over a fixed chunking so results never depend on the thread count.
#pragma once

#include <cstddef>
#include <functional>

namespace persona {

// Hardware concurrency as oneTBB sees it (respects affinity masks).
int hardware_threads() noexcept;

// The limit persona kernels called from this thread use now.
int num_threads() noexcept;

// Sets the process-wide limit; n = 0 means hardware_threads(). Throws Error for n < 0.
void set_num_threads(int n);

// Limits persona kernels called from the current thread to n threads while the object lives.
class ScopedNumThreads {
 public:
  explicit ScopedNumThreads(int n);
  ~ScopedNumThreads();
  ScopedNumThreads(const ScopedNumThreads&) = delete;
  ScopedNumThreads& operator=(const ScopedNumThreads&) = delete;

 private:
  int previous_;
};

namespace detail {
void parallel_for_chunks(std::size_t chunk_count, const std::function<void(std::size_t)>& body);
}

// Calls body(begin, end) for consecutive chunks of [0, count) of `grain` items (the last may be
// shorter), on up to num_threads() threads. The chunk boundaries depend only on count and grain, so a
// kernel that reduces within a chunk gives identical results for any thread count.
template <class Body>
void parallel_for(std::size_t count, std::size_t grain, Body&& body) {
  if (count == 0) return;
  if (grain == 0) grain = 1;
  const std::size_t chunks = (count + grain - 1) / grain;
  if (chunks == 1 || num_threads() == 1) {
    for (std::size_t c = 0; c < chunks; ++c) {
      const std::size_t begin = c * grain;
      body(begin, begin + grain < count ? begin + grain : count);
    }
    return;
  }
  detail::parallel_for_chunks(chunks, [&](std::size_t c) {
    const std::size_t begin = c * grain;
    body(begin, begin + grain < count ? begin + grain : count);
  });
}

}  // namespace persona
