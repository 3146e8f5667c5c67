// persona::Error, the one exception type thrown at API boundaries, and the one macro family that throws
// it (PERSONA_CHECK, PERSONA_CHECK_CODE, PERSONA_THROW, and their _AT forms for shared validators), with a
// formatted message naming the argument, the value and what was expected.
#pragma once

#include <fmt/format.h>

#include <cassert>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace persona {

enum class ErrorCode {
  invalid_argument,
  shape_mismatch,
  out_of_range,
  corrupt_data,
  io_error,
  not_found,
  permission_denied,
  capacity_exhausted,
  unsupported,
};

std::string_view to_string(ErrorCode code) noexcept;

class Error : public std::runtime_error {
 public:
  // what() reads "<code> in <function>: <message>"; message() is the message alone.
  Error(ErrorCode code, std::string_view function, std::string message);

  ErrorCode code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }
  const std::string& function() const noexcept { return function_; }

 private:
  ErrorCode code_;
  std::string function_;
  std::string message_;
};

namespace detail {
template <class... Args>
[[noreturn]] void throw_error(ErrorCode code, const char* function, fmt::format_string<Args...> format,
                              Args&&... args) {
  throw Error(code, function, fmt::format(format, std::forward<Args>(args)...));
}
}  // namespace detail

}  // namespace persona

// Caller mistakes: throws persona::Error(invalid_argument) unless `cond` holds.
#define PERSONA_CHECK(cond, ...)                                                                                 \
  do {                                                                                                           \
    if (!(cond))                                                                                                 \
      ::persona::detail::throw_error(::persona::ErrorCode::invalid_argument, static_cast<const char*>(__func__), \
                                     __VA_ARGS__);                                                               \
  } while (false)

// The same with an explicit ErrorCode, e.g. PERSONA_CHECK_CODE(shape_mismatch, a == b, "...").
#define PERSONA_CHECK_CODE(code, cond, ...)                                                                        \
  do {                                                                                                             \
    if (!(cond))                                                                                                   \
      ::persona::detail::throw_error(::persona::ErrorCode::code, static_cast<const char*>(__func__), __VA_ARGS__); \
  } while (false)

#define PERSONA_THROW(code, ...) \
  ::persona::detail::throw_error(::persona::ErrorCode::code, static_cast<const char*>(__func__), __VA_ARGS__)

// Explicit-origin variants for shared validators, which report in the name of the public function that
// called them (`origin`, a const char*): PERSONA_CHECK_AT(function, shape_mismatch, a == b, "...").
#define PERSONA_CHECK_AT(origin, code, cond, ...)                                                 \
  do {                                                                                            \
    if (!(cond)) ::persona::detail::throw_error(::persona::ErrorCode::code, origin, __VA_ARGS__); \
  } while (false)

#define PERSONA_THROW_AT(origin, code, ...) \
  ::persona::detail::throw_error(::persona::ErrorCode::code, origin, __VA_ARGS__)

// Broken internal invariants (never caller mistakes): abort in debug builds.
#define PERSONA_ASSERT(cond) assert(cond)
