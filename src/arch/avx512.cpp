// AVX-512 level (F/CD/BW/DQ/VL): compiled with its own flags, used only when the CPU has them.
#define PERSONA_ARCH_EIGEN persona_eigen_avx512
#include "arch/core_kernels.hpp"

#include <immintrin.h>

namespace persona::detail {

using Avx512 = xsimd::avx512bw;

template <>
struct HalfIo<Avx512> {
  using F = xsimd::batch<float, Avx512>;
  using U = xsimd::batch<std::uint32_t, Avx512>;
  static F load_f16(const std::uint16_t* p) noexcept {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static void store_f16(std::uint16_t* p, F v) noexcept {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static U load_u16(const std::uint16_t* p) noexcept {
    return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static void store_u16(std::uint16_t* p, U v) noexcept {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(v));
  }
};

namespace {
constexpr CoreKernelTable kAvx512 = make_core_kernel_table<Avx512>(IsaLevel::avx512);
}
const CoreKernelTable& avx512_core_kernels() noexcept { return kAvx512; }

}  // namespace persona::detail
