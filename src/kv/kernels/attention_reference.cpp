// The scalar attention kernel: token by token online softmax in double, the oracle the SIMD kernels are
// tested against and the scalar level.
#include "kv/kernels/attention_kernel_table.hpp"
#include "kv/kv_storage.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

namespace persona::detail {
namespace {

void attend_ref(const AttentionHead& head, const AttentionRows& rows) noexcept {
  const KvLayerView& layer = head.layer;
  const std::size_t dim = layer.head_dim, mask = layer.block_size - 1;
  std::array<double, kMaxHeadDim> acc{};
  std::array<float, kMaxHeadDim> key{}, value{};
  for (std::size_t r = 0; r < rows.count; ++r) {
    double max = -std::numeric_limits<double>::infinity(), sum = 0.0;
    std::fill_n(acc.begin(), dim, 0.0);
    for (std::size_t pos = rows.start[r]; pos < rows.context[r]; ++pos) {
      const std::size_t row =
          layer.row_index(static_cast<std::size_t>(head.blocks[pos >> head.block_shift]), pos & mask, head.head);
      kv_load_row(layer, layer.k, layer.k_scale, row, key.data());
      kv_load_row(layer, layer.v, layer.v_scale, row, value.data());
      double score = 0.0;
      for (std::size_t d = 0; d < dim; ++d) score += static_cast<double>(rows.q[r][d]) * key[d];
      score *= head.scale;
      const double next = std::max(max, score);
      const double correction = std::exp(max - next), weight = std::exp(score - next);
      sum = sum * correction + weight;
      for (std::size_t d = 0; d < dim; ++d) acc[d] = acc[d] * correction + weight * value[d];
      max = next;
    }
    for (std::size_t d = 0; d < dim; ++d) rows.out[r][d] = static_cast<float>(acc[d] / sum);
  }
}

}  // namespace

constinit const AttentionKernelTable kAttentionReferenceKernels{attend_ref};

const AttentionKernelTable& reference_attention_kernels() noexcept { return kAttentionReferenceKernels; }

}  // namespace persona::detail
