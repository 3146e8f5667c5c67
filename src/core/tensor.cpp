#include "persona/core/tensor.hpp"

#include <fmt/ranges.h>

namespace persona {

std::string Shape::to_string() const { return fmt::format("[{}]", fmt::join(dims(), ", ")); }

}  // namespace persona
