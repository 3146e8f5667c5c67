// Thread control for every persona kernel: a process-wide thread limit, a scoped limit for one calling
// thread, and parallel_for over a fixed chunking so results never depend on the thread count.
#pragma once

#include <cstddef>

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

// The number of distinct slots parallel_for_slots passes to its body: at most one thread per slot.
std::size_t thread_slot_count() noexcept;

namespace detail {
// Calls run(context, slot, chunk) for every chunk on up to num_threads() threads. A plain function and
// context rather than std::function, so that starting a parallel loop never allocates.
void parallel_for_chunks(std::size_t chunk_count, void (*run)(void* context, std::size_t slot, std::size_t chunk),
                         void* context);
}  // namespace detail

// Calls body(slot, begin, end) for consecutive chunks of [0, count) of `grain` items (the last may be
// shorter), on up to num_threads() threads. The chunk boundaries depend only on count and grain, so a
// kernel that reduces within a chunk gives identical results for any thread count. slot, in
// [0, thread_slot_count()), is never shared by two chunks that run at the same time: it indexes
// per-thread scratch. A body that uses its slot's scratch must not start parallel work itself (a
// waiting thread may run another chunk of the outer loop, with the same slot).
template <class Body>
void parallel_for_slots(std::size_t count, std::size_t grain, Body&& body) {
  if (count == 0) return;
  if (grain == 0) grain = 1;
  const std::size_t chunks = (count + grain - 1) / grain;
  auto chunk = [&](std::size_t slot, std::size_t c) {
    const std::size_t begin = c * grain;
    body(slot, begin, begin + grain < count ? begin + grain : count);
  };
  if (chunks == 1 || num_threads() == 1) {
    for (std::size_t c = 0; c < chunks; ++c) chunk(0, c);
    return;
  }
  using Chunk = decltype(chunk);
  detail::parallel_for_chunks(
      chunks, [](void* context, std::size_t slot, std::size_t c) { (*static_cast<Chunk*>(context))(slot, c); }, &chunk);
}

// As parallel_for_slots, for bodies that need no slot: body(begin, end).
template <class Body>
void parallel_for(std::size_t count, std::size_t grain, Body&& body) {
  parallel_for_slots(count, grain, [&](std::size_t, std::size_t begin, std::size_t end) { body(begin, end); });
}

}  // namespace persona
