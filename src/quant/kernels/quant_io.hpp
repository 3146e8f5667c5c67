// The integer pieces of the quantized products for the AVX2 and AVX-512 families (QuantIo): the 4-way
// byte dot products (maddubs, or VNNI's vpdpbusd), int8 packing, 16-entry lookups and register blocking.
// Included only by the quant_<level>.cpp files, each compiled with its own flags.
#pragma once

#include "core/kernels/x86_io.hpp"

#include <xsimd/xsimd.hpp>

#include <immintrin.h>

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>

namespace persona::detail {

template <class Arch>
struct QuantIo;

// dot4(acc, w, x): each 32-bit lane gets acc + sum_{j<4} (w_j - bias) * x_j for unsigned codes w and
// signed int8 x. `Wide` codes may exceed 127: the maddubs paths then centre them (bias 128) so the 16-bit
// pair sums cannot saturate; VNNI needs no bias.
template <>
struct QuantIo<Avx2Arch> {
  using I32 = xsimd::batch<std::int32_t, Avx2Arch>;
  using U8 = xsimd::batch<std::uint8_t, Avx2Arch>;
  using F = xsimd::batch<float, Avx2Arch>;
  // Register blocking of the quantized products (16 ymm registers): row vectors per block for one token
  // (decode), and row vectors x tokens per block for several.
  static constexpr std::size_t kDecodeRowVectors = 4;
  static constexpr std::size_t kRowVectors = 2;
  static constexpr std::size_t kTokenBlock = 2;

  template <bool Wide>
  static constexpr std::int32_t dot_bias = Wide ? 128 : 0;

  // Narrow codes (at most 4 bits) may sum maddubs pairs in 16 bits before widening: one pair is at most
  // 2 * 15 * 127 = 3810, so kPairSumFields of them stay below 32767 and the sums are exact.
  static constexpr bool kPairSums = true;
  static constexpr std::size_t kPairSumFields = 8;
  using I16 = xsimd::batch<std::int16_t, Avx2Arch>;
  static I16 pair_dot(I16 acc, U8 w, I32 x) noexcept { return _mm256_add_epi16(acc, _mm256_maddubs_epi16(w, x)); }
  static I32 widen_pairs(I32 acc, I16 pairs) noexcept {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }

  template <bool Wide>
  static I32 dot4(I32 acc, U8 w, I32 x) noexcept {
    __m256i pairs;
    if constexpr (Wide) {
      const __m256i centred = _mm256_xor_si256(w, _mm256_set1_epi8(static_cast<char>(0x80)));
      pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(centred), _mm256_sign_epi8(x, centred));
    } else {
      pairs = _mm256_maddubs_epi16(w, x);
    }
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
  // Four vectors of int32 values in [-127, 127] as bytes to p[0..32), in order.
  static void store_i8x4(std::int8_t* p, I32 a, I32 b, I32 c, I32 d) noexcept {
    // packs works per 128-bit lane: the bytes come out as dwords a0 b0 c0 d0 a1 b1 c1 d1.
    const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    const __m256i ordered = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), ordered);
  }
  // Per byte: table[index] for indices 0..15.
  static U8 lookup16(U8 index, const std::array<std::uint8_t, 16>& table) noexcept {
    return _mm256_shuffle_epi8(
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table.data()))), index);
  }
  // Per 32-bit lane: table[index] for indices 0..15.
  static F lookup16(I32 index, const float* table) noexcept {
    const __m256 low = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table), index);
    const __m256 high = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table + 8), index);
    return _mm256_blendv_ps(low, high, _mm256_castsi256_ps(_mm256_cmpgt_epi32(index, _mm256_set1_epi32(7))));
  }
};

template <Avx512Family Arch>
struct QuantIo<Arch> {
  using I32 = xsimd::batch<std::int32_t, Arch>;
  using U8 = xsimd::batch<std::uint8_t, Arch>;
  using F = xsimd::batch<float, Arch>;
  static constexpr bool kVnni = std::same_as<Arch, Avx512VnniArch>;
  // Register blocking of the quantized products (32 zmm registers), measured on 4096 x 4096 int4: four
  // row vectors (four weight streams) for one token; two row vectors x four tokens for several.
  static constexpr std::size_t kDecodeRowVectors = 4;
  static constexpr std::size_t kRowVectors = 2;
  static constexpr std::size_t kTokenBlock = 4;

  template <bool Wide>
  static constexpr std::int32_t dot_bias = (Wide && !kVnni) ? 128 : 0;

  // As for AVX2; VNNI's vpdpbusd needs no pair sums.
  static constexpr bool kPairSums = !kVnni;
  static constexpr std::size_t kPairSumFields = 8;
  using I16 = xsimd::batch<std::int16_t, Arch>;
  static I16 pair_dot(I16 acc, U8 w, I32 x) noexcept { return _mm512_add_epi16(acc, _mm512_maddubs_epi16(w, x)); }
  static I32 widen_pairs(I32 acc, I16 pairs) noexcept {
    return _mm512_add_epi32(acc, _mm512_madd_epi16(pairs, _mm512_set1_epi16(1)));
  }

  template <bool Wide>
  static I32 dot4(I32 acc, U8 w, I32 x) noexcept {
    if constexpr (kVnni) {
      return _mm512_dpbusd_epi32(acc, w, x);
    } else {
      __m512i pairs;
      if constexpr (Wide) {
        // No vpsignb in AVX-512: negate x where the centred code is negative.
        const __m512i centred = _mm512_xor_si512(w, _mm512_set1_epi8(static_cast<char>(0x80)));
        const __m512i signed_x = _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(centred), _mm512_setzero_si512(), x);
        pairs = _mm512_maddubs_epi16(_mm512_abs_epi8(centred), signed_x);
      } else {
        pairs = _mm512_maddubs_epi16(w, x);
      }
      return _mm512_add_epi32(acc, _mm512_madd_epi16(pairs, _mm512_set1_epi16(1)));
    }
  }
  static void store_i8x4(std::int8_t* p, I32 a, I32 b, I32 c, I32 d) noexcept {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(a));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p + 16), _mm512_cvtepi32_epi8(b));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p + 32), _mm512_cvtepi32_epi8(c));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p + 48), _mm512_cvtepi32_epi8(d));
  }
  static U8 lookup16(U8 index, const std::array<std::uint8_t, 16>& table) noexcept {
    return _mm512_shuffle_epi8(_mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table.data()))),
                               index);
  }
  static F lookup16(I32 index, const float* table) noexcept {
    return _mm512_permutexvar_ps(index, _mm512_loadu_ps(table));
  }
};

}  // namespace persona::detail
