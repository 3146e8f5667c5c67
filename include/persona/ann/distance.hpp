// The distances of the vector indexes as functions over spans, at the active SIMD level and as plain
// reference loops (*_ref, accumulating in double). Error shape_mismatch for different lengths. The inner
// product is persona::dot (persona/core/ops.hpp).
#pragma once

#include <cstdint>
#include <span>

namespace persona {

// sum (a[i] - b[i])^2: the squared L2 distance (Metric::l2).
float squared_l2(std::span<const float> a, std::span<const float> b);
float squared_l2_ref(std::span<const float> a, std::span<const float> b);
// sum a[i] * b[i] over float a and signed bytes b: a query against HnswIndex's int8 rows.
float dot_i8(std::span<const float> a, std::span<const std::int8_t> b);
float dot_i8_ref(std::span<const float> a, std::span<const std::int8_t> b);

}  // namespace persona
