// AVX2 + FMA + F16C level: compiled with -mavx2 -mfma -mf16c, used only when the CPU has them.
#define PERSONA_ARCH_EIGEN persona_eigen_avx2
#include "arch/core_kernels.hpp"

#include <immintrin.h>

namespace persona::detail {

using Avx2 = xsimd::fma3<xsimd::avx2>;

template <>
struct HalfIo<Avx2> {
  using F = xsimd::batch<float, Avx2>;
  using U = xsimd::batch<std::uint32_t, Avx2>;
  static F load_f16(const std::uint16_t* p) noexcept {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static void store_f16(std::uint16_t* p, F v) noexcept {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  static U load_u16(const std::uint16_t* p) noexcept {
    return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static void store_u16(std::uint16_t* p, U v) noexcept {
    // packus works per 128-bit lane; the permute gathers both lanes' results into the low half.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(v, v), 0b1000);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
  }
};

namespace {
constexpr CoreKernelTable kAvx2 = make_core_kernel_table<Avx2>(IsaLevel::avx2);
}
const CoreKernelTable& avx2_core_kernels() noexcept { return kAvx2; }

}  // namespace persona::detail
