#include "registry/load_workers.hpp"

namespace persona::detail {

LoadWorkers::~LoadWorkers() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  ready_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void LoadWorkers::run(std::function<void()> task) {
  {
    std::lock_guard lock(mutex_);
    tasks_.push_back(std::move(task));
    // One more thread while fewer than wanted run: a burst of loads spreads over them from the start.
    if (threads_.size() < wanted_) {
      try {
        threads_.emplace_back([this] { work(); });
      } catch (...) {
        if (threads_.empty()) {  // no thread at all: the task would never run
          tasks_.pop_back();
          throw;
        }  // else the running ones take it
      }
    }
  }
  ready_.notify_one();
}

void LoadWorkers::work() {
  std::unique_lock lock(mutex_);
  for (;;) {
    ready_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
    if (tasks_.empty()) return;  // stopping, and nothing left to run
    std::function<void()> task = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    task();
    lock.lock();
  }
}

}  // namespace persona::detail
