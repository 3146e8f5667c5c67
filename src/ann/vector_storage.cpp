// The int8 row codec of vector_storage.hpp.
#include "ann/vector_storage.hpp"

#include <cmath>

namespace persona::detail {

void encode_int8_row(const float* x, std::size_t dim, std::int8_t* row) noexcept {
  const auto [lo, hi] = std::minmax_element(x, x + dim);
  const float scale = (*hi - *lo) / 255.0f;
  const float offset = *lo + 128.0f * scale;
  const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
  std::int8_t* codes = row + kInt8RowHeaderBytes;
  // The norm of the decoded row, not of x: the L2 distance is then exact for the coded vector.
  double norm = 0.0;
  for (std::size_t i = 0; i < dim; ++i) {
    const float code = std::clamp(std::nearbyint((x[i] - offset) * inverse), -128.0f, 127.0f);
    codes[i] = static_cast<std::int8_t>(code);
    const double value = static_cast<double>(offset) + static_cast<double>(scale) * code;
    norm += value * value;
  }
  const Int8RowHeader header{scale, offset, static_cast<float>(norm), 0.0f};
  std::memcpy(row, &header, sizeof(header));
}

void decode_int8_row(const std::int8_t* row, std::size_t dim, float* out) noexcept {
  const Int8RowHeader h = int8_row_header(row);
  const std::int8_t* codes = int8_row_codes(row);
  for (std::size_t i = 0; i < dim; ++i) out[i] = h.offset + h.scale * static_cast<float>(codes[i]);
}

}  // namespace persona::detail
