#include "persona/core/threading.hpp"

#include "persona/core/error.hpp"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>

namespace persona {
namespace {

std::atomic<int> g_process_limit{0};  // 0: hardware
thread_local int t_scoped_limit = 0;  // 0: none

// One arena per thread limit, made on first use and kept: arenas are cheap to keep and costly to make.
tbb::task_arena& arena_for(int threads) {
  static std::mutex mutex;
  static std::map<int, std::unique_ptr<tbb::task_arena>> arenas;
  std::lock_guard lock(mutex);
  auto& arena = arenas[threads];
  if (!arena) arena = std::make_unique<tbb::task_arena>(threads);
  return *arena;
}

// Sets this thread's limit and restores it on exit, exceptions included.
class LimitGuard {
 public:
  explicit LimitGuard(int threads) noexcept : saved_(t_scoped_limit) { t_scoped_limit = threads; }
  ~LimitGuard() { t_scoped_limit = saved_; }
  LimitGuard(const LimitGuard&) = delete;
  LimitGuard& operator=(const LimitGuard&) = delete;

 private:
  int saved_;
};

}  // namespace

int hardware_threads() noexcept { return tbb::info::default_concurrency(); }

std::size_t thread_slot_count() noexcept { return static_cast<std::size_t>(hardware_threads()); }

int num_threads() noexcept {
  if (t_scoped_limit > 0) return t_scoped_limit;
  const int limit = g_process_limit.load(std::memory_order_relaxed);
  return limit > 0 ? limit : hardware_threads();
}

void set_num_threads(int n) {
  PERSONA_CHECK(n >= 0, "thread count must be >= 0 (0 = all hardware threads), got {}", n);
  g_process_limit.store(n, std::memory_order_relaxed);
}

ScopedNumThreads::ScopedNumThreads(int n) : previous_(t_scoped_limit) {
  PERSONA_CHECK(n >= 1, "scoped thread count must be >= 1, got {}", n);
  t_scoped_limit = n;
}

ScopedNumThreads::~ScopedNumThreads() { t_scoped_limit = previous_; }

namespace detail {

void parallel_for_chunks(std::size_t chunk_count, void (*run)(void* context, std::size_t slot, std::size_t chunk),
                         void* context) {
  const int threads = num_threads();
  // More threads than the hardware has only adds contention (and oneTBB warns); chunks stay the same.
  arena_for(std::min(threads, hardware_threads())).execute([&] {
    // Nested persona calls inside a worker must see the same limit, not the process default.
    tbb::parallel_for(
        tbb::blocked_range<std::size_t>(0, chunk_count, 1),
        [&](const tbb::blocked_range<std::size_t>& range) {
          const LimitGuard guard(threads);
          // The arena has at most hardware_threads() slots, so the index is below thread_slot_count().
          const auto slot = static_cast<std::size_t>(tbb::this_task_arena::current_thread_index());
          for (std::size_t c = range.begin(); c != range.end(); ++c) run(context, slot, c);
        },
        tbb::simple_partitioner());
  });
}

}  // namespace detail
}  // namespace persona
