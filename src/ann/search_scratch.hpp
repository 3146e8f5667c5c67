// What one walk of the HNSW graph works in: the candidate heaps, the visited marks, and a per-thread
// pool of them, so that a search allocates nothing once its thread has searched before.
#pragma once

#include "ann/hnsw_links.hpp"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

namespace persona::detail {

struct Candidate {
  float distance;
  Slot slot;
};
// Heap orders: the frontier's top is the nearest candidate, the results' top the farthest.
constexpr auto kNearerFirst = [](const Candidate& a, const Candidate& b) { return a.distance > b.distance; };
constexpr auto kFartherFirst = [](const Candidate& a, const Candidate& b) { return a.distance < b.distance; };

// Marks of the nodes one search has visited; a generation counter clears it in O(1).
struct Visited {
  std::vector<std::uint16_t> marks;
  std::uint16_t generation = 0;
  void reset(std::size_t size) {
    if (marks.size() < size) marks.resize(size, 0);
    if (++generation == 0) {
      std::fill(marks.begin(), marks.end(), 0);
      generation = 1;
    }
  }
  bool visit(Slot s) noexcept {
    if (marks[s] == generation) return false;
    marks[s] = generation;
    return true;
  }
};

// What one walk needs besides the index: kept per thread so that a search allocates nothing.
struct Scratch {
  Visited visited;
  std::vector<Candidate> frontier, results;
  bool busy = false;
};

// This thread's scratch, or a fresh one when a filter predicate searches from inside a search.
class ScratchLease {
 public:
  ScratchLease() {
    thread_local Scratch mine;
    if (mine.busy) {
      own_ = std::make_unique<Scratch>();
      scratch_ = own_.get();
    } else {
      scratch_ = &mine;
    }
    scratch_->busy = true;
  }
  ~ScratchLease() { scratch_->busy = false; }
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;
  Scratch& operator*() const noexcept { return *scratch_; }
  Scratch* operator->() const noexcept { return scratch_; }

 private:
  std::unique_ptr<Scratch> own_;
  Scratch* scratch_ = nullptr;
};

}  // namespace persona::detail
