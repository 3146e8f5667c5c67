// The x86 primitives core offers every kernel family, for the AVX2 and AVX-512 families: the Arch types,
// single-rounding fma, lane masks, 16-bit loads and stores (HalfIo), int8 widening and a horizontal max.
// Included only by the per-level files (<family>_<level>.cpp), each compiled with its own flags.
#pragma once

#include <xsimd/xsimd.hpp>

#include <immintrin.h>

#include <concepts>
#include <cstdint>

namespace persona::detail {

using Avx2Arch = xsimd::fma3<xsimd::avx2>;
using Avx512Arch = xsimd::avx512bw;
// AVX-512 with VNNI: its own type, so the instantiations in the <family>_avx512_vnni.cpp files (built with
// -mavx512vnni) never share a symbol with those of the <family>_avx512.cpp files.
struct Avx512VnniArch : xsimd::avx512bw {
  static constexpr char const* name() noexcept { return "persona_avx512_vnni"; }
};

template <class Arch>
concept Avx512Family = std::derived_from<Arch, xsimd::avx512bw>;

// a * b + c rounded once. xsimd 8.1 has no AVX-512 fma: its generic fallback multiplies and adds
// separately, which would break the bit-for-bit agreement with the scalar oracles (std::fma).
template <class Arch>
xsimd::batch<float, Arch> fused_multiply_add(const xsimd::batch<float, Arch>& a, const xsimd::batch<float, Arch>& b,
                                             const xsimd::batch<float, Arch>& c) noexcept {
  if constexpr (Avx512Family<Arch>) {
    return _mm512_fmadd_ps(a, b, c);
  } else {
    return xsimd::fma(a, b, c);
  }
}

// a * b - c rounded once.
template <class Arch>
xsimd::batch<float, Arch> fused_multiply_sub(const xsimd::batch<float, Arch>& a, const xsimd::batch<float, Arch>& b,
                                             const xsimd::batch<float, Arch>& c) noexcept {
  if constexpr (Avx512Family<Arch>) {
    return _mm512_fmsub_ps(a, b, c);
  } else {
    return xsimd::fms(a, b, c);
  }
}

// Lane i of a float compare as bit i.
template <class Arch>
std::uint32_t lane_bits(const xsimd::batch_bool<float, Arch>& mask) noexcept {
  if constexpr (Avx512Family<Arch>) {
    return static_cast<std::uint32_t>(static_cast<__mmask16>(mask));
  } else {
    return static_cast<std::uint32_t>(_mm256_movemask_ps(mask));
  }
}

template <class Arch>
struct HalfIo;

template <>
struct HalfIo<Avx2Arch> {
  using F = xsimd::batch<float, Avx2Arch>;
  using U = xsimd::batch<std::uint32_t, Avx2Arch>;
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

template <Avx512Family Arch>
struct HalfIo<Arch> {
  using F = xsimd::batch<float, Arch>;
  using U = xsimd::batch<std::uint32_t, Arch>;
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

// Signed bytes widened to float: the int8 KV rows.
template <class Arch>
xsimd::batch<float, Arch> load_i8_as_f32(const std::int8_t* p) noexcept {
  if constexpr (Avx512Family<Arch>) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  } else {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
}

// The largest lane.
template <class Arch>
float reduce_max(xsimd::batch<float, Arch> v) noexcept {
  if constexpr (Avx512Family<Arch>) {
    return _mm512_reduce_max_ps(v);
  } else {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
  }
}

}  // namespace persona::detail

#if defined(__AVX512F__)
namespace xsimd::types {
template <class T>
struct get_bool_simd_register<T, persona::detail::Avx512VnniArch> {
  using type = simd_avx512_bool_register<T>;
};
XSIMD_DECLARE_SIMD_REGISTER_ALIAS(persona::detail::Avx512VnniArch, avx512bw);
}  // namespace xsimd::types
#endif
