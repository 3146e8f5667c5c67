#include "persona/core/error.hpp"

namespace persona {

std::string_view to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::invalid_argument: return "invalid_argument";
    case ErrorCode::shape_mismatch: return "shape_mismatch";
    case ErrorCode::out_of_range: return "out_of_range";
    case ErrorCode::corrupt_data: return "corrupt_data";
    case ErrorCode::io_error: return "io_error";
    case ErrorCode::not_found: return "not_found";
    case ErrorCode::permission_denied: return "permission_denied";
    case ErrorCode::capacity_exhausted: return "capacity_exhausted";
    case ErrorCode::unsupported: return "unsupported";
  }
  return "unknown";
}

Error::Error(ErrorCode code, std::string_view function, std::string message)
    : std::runtime_error(fmt::format("{} in {}: {}", to_string(code), function, message)),
      code_(code),
      function_(function),
      message_(std::move(message)) {}

}  // namespace persona
