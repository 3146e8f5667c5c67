// The registry's own threads for acquire_async and prefetch loads: a FIFO of tasks run by a few
// std::threads started on first use. Not oneTBB's workers: a load mostly waits on the disk, and on
// threads of its own it never takes a compute worker from the model nor waits for one (one CPU), and
// every hand-off is a mutex that ThreadSanitizer sees.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace persona::detail {

class LoadWorkers {
 public:
  explicit LoadWorkers(std::size_t threads) : wanted_(threads) {}
  // Runs every task queued, then stops the threads.
  ~LoadWorkers();
  LoadWorkers(const LoadWorkers&) = delete;
  LoadWorkers& operator=(const LoadWorkers&) = delete;

  // Queues `task` (which must not throw) and returns at once. Error (std::system_error) only when no
  // thread runs and none can be started; the task is then not queued.
  void run(std::function<void()> task);

 private:
  void work();

  std::size_t wanted_;
  std::mutex mutex_;  // everything below
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace persona::detail
