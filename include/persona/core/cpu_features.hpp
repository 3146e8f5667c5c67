// Runtime SIMD dispatch: what the CPU offers, which kernel level persona uses, and how to force one.
// Kernels are compiled once per level (src/<component>/kernels/) and picked by this level; nothing is built for the
// build machine's own CPU.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace persona {

// Kernel levels, lowest to highest. `scalar` is portable C++ (the reference kernels); `avx2` needs
// AVX2 + FMA + F16C; `avx512` needs AVX-512 F/CD/BW/DQ/VL; `avx512_vnni` adds VNNI (int8 dot products).
enum class IsaLevel { scalar = 0, avx2 = 1, avx512 = 2, avx512_vnni = 3 };

std::string_view to_string(IsaLevel level) noexcept;
// Parses "scalar", "avx2", "avx512" or "avx512_vnni"; throws Error(invalid_argument) listing the allowed values.
IsaLevel parse_isa_level(std::string_view name);

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512cd = false;
  bool avx512bw = false;
  bool avx512dq = false;
  bool avx512vl = false;
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
  bool avx_vnni = false;
  IsaLevel best = IsaLevel::scalar;    // the highest level this CPU (and this build) can run
  IsaLevel active = IsaLevel::scalar;  // the level in use: `best`, or what PERSONA_ISA / ScopedIsaLevel says

  // One line, e.g. "active avx512 (best avx512; cpu: avx2 fma f16c avx512f ... avx512_vnni)".
  std::string to_string() const;
};

// Probed once (first call); `active` reflects the current forced level, if any.
CpuFeatures cpu_features();

// Levels this process can run, lowest first (always contains scalar). Tests loop over these.
std::vector<IsaLevel> supported_isa_levels();

// The level kernels run at now. At first use it is read from the environment variable PERSONA_ISA
// (scalar|avx2|avx512|avx512_vnni) if set, else the best level; a value that is unknown or that the CPU lacks is an
// Error naming the allowed values and what the CPU supports.
IsaLevel active_isa_level();

// Forces `level` process-wide; throws Error(unsupported) if this CPU or build cannot run it.
void set_isa_level(IsaLevel level);

// Forces a level for the lifetime of the object, then restores the previous one. Not thread-safe with
// respect to concurrent kernel calls on other threads: meant for tests and benchmarks.
class ScopedIsaLevel {
 public:
  explicit ScopedIsaLevel(IsaLevel level);
  ~ScopedIsaLevel();
  ScopedIsaLevel(const ScopedIsaLevel&) = delete;
  ScopedIsaLevel& operator=(const ScopedIsaLevel&) = delete;

 private:
  IsaLevel previous_;
};

}  // namespace persona
