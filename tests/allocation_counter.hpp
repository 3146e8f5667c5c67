// Replaces the global operator new to count allocations made on this thread while a CountAllocations
// lives: the proof that a warm hot path allocates nothing. Include it from one file per test binary.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

namespace persona::test {

inline thread_local bool t_count_allocations = false;
inline thread_local std::size_t t_allocations = 0;

class CountAllocations {
 public:
  CountAllocations() {
    t_allocations = 0;
    t_count_allocations = true;
  }
  ~CountAllocations() { t_count_allocations = false; }
  CountAllocations(const CountAllocations&) = delete;
  CountAllocations& operator=(const CountAllocations&) = delete;
  std::size_t count() const noexcept { return t_allocations; }
};

}  // namespace persona::test

// GCC flags free() in a replaced operator delete as a mismatch with new; here new is malloc. Every
// non-aligned form is replaced, so that AddressSanitizer's own never pairs with ours.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t size) {
  if (persona::test::t_count_allocations) ++persona::test::t_allocations;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  if (persona::test::t_count_allocations) ++persona::test::t_allocations;
  return std::malloc(size == 0 ? 1 : size);
}
void* operator new[](std::size_t size, const std::nothrow_t& tag) noexcept { return operator new(size, tag); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
#pragma GCC diagnostic pop
