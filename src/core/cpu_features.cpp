#include "persona/core/cpu_features.hpp"

#include "persona/core/error.hpp"

#include <fmt/format.h>

#include <atomic>
#include <cstdlib>
#include <mutex>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define PERSONA_X86 1
#endif

namespace persona {
namespace {

#if PERSONA_X86
std::uint64_t read_xcr0() {
  std::uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<std::uint64_t>(edx) << 32) | eax;
}
#endif

CpuFeatures probe() {
  CpuFeatures f;
#if PERSONA_X86
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1;
  const std::uint64_t xcr0 = osxsave ? read_xcr0() : 0;
  // The OS must save the wider registers, or using them is an illegal instruction in disguise.
  const bool os_avx = (xcr0 & 0x6) == 0x6;
  const bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;
  f.fma = os_avx && ((c >> 12) & 1);
  f.f16c = os_avx && ((c >> 29) & 1);
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = os_avx && ((b >> 5) & 1);
    f.avx512f = os_avx512 && ((b >> 16) & 1);
    f.avx512dq = os_avx512 && ((b >> 17) & 1);
    f.avx512cd = os_avx512 && ((b >> 28) & 1);
    f.avx512bw = os_avx512 && ((b >> 30) & 1);
    f.avx512vl = os_avx512 && ((b >> 31) & 1);
    f.avx512_vnni = os_avx512 && ((c >> 11) & 1);
  }
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) {
    f.avx_vnni = os_avx && ((a >> 4) & 1);
    f.avx512_bf16 = os_avx512 && ((a >> 5) & 1);
  }
#endif
#if PERSONA_HAVE_AVX2_KERNELS
  if (f.avx2 && f.fma && f.f16c) f.best = IsaLevel::avx2;
#endif
#if PERSONA_HAVE_AVX512_KERNELS
  if (f.best == IsaLevel::avx2 && f.avx512f && f.avx512cd && f.avx512bw && f.avx512dq && f.avx512vl) {
    f.best = IsaLevel::avx512;
#if PERSONA_HAVE_AVX512_VNNI_KERNELS
    if (f.avx512_vnni) f.best = IsaLevel::avx512_vnni;
#endif
  }
#endif
  return f;
}

const CpuFeatures& probed() {
  static const CpuFeatures features = probe();
  return features;
}

constexpr int kUnset = -1;
std::atomic<int> g_active{kUnset};
std::mutex g_init_mutex;

std::string supported_list() {
  std::string out;
  for (IsaLevel level : supported_isa_levels()) {
    if (!out.empty()) out += ", ";
    out += to_string(level);
  }
  return out;
}

void check_supported(IsaLevel level, std::string_view origin) {
  PERSONA_CHECK_CODE(unsupported, level <= probed().best,
                     "{} asks for ISA level {}, but this CPU and build support only: {}", origin, to_string(level),
                     supported_list());
}

}  // namespace

std::string_view to_string(IsaLevel level) noexcept {
  switch (level) {
    case IsaLevel::scalar: return "scalar";
    case IsaLevel::avx2: return "avx2";
    case IsaLevel::avx512: return "avx512";
    case IsaLevel::avx512_vnni: return "avx512_vnni";
  }
  return "unknown";
}

IsaLevel parse_isa_level(std::string_view name) {
  for (IsaLevel level : {IsaLevel::scalar, IsaLevel::avx2, IsaLevel::avx512, IsaLevel::avx512_vnni}) {
    if (name == to_string(level)) return level;
  }
  PERSONA_THROW(invalid_argument,
                "unknown ISA level '{}': allowed values are scalar, avx2, avx512, avx512_vnni (this CPU supports: {})",
                name, supported_list());
}

std::vector<IsaLevel> supported_isa_levels() {
  std::vector<IsaLevel> levels;
  for (int l = 0; l <= static_cast<int>(probed().best); ++l) levels.push_back(static_cast<IsaLevel>(l));
  return levels;
}

IsaLevel active_isa_level() {
  const int active = g_active.load(std::memory_order_acquire);
  if (active != kUnset) return static_cast<IsaLevel>(active);
  std::lock_guard lock(g_init_mutex);
  if (g_active.load() == kUnset) {
    IsaLevel level = probed().best;
    if (const char* env = std::getenv("PERSONA_ISA"); env != nullptr && *env != '\0') {
      level = parse_isa_level(env);
      check_supported(level, "PERSONA_ISA");
    }
    g_active.store(static_cast<int>(level), std::memory_order_release);
  }
  return static_cast<IsaLevel>(g_active.load());
}

void set_isa_level(IsaLevel level) {
  check_supported(level, "set_isa_level");
  g_active.store(static_cast<int>(level), std::memory_order_release);
}

ScopedIsaLevel::ScopedIsaLevel(IsaLevel level) : previous_(active_isa_level()) { set_isa_level(level); }
ScopedIsaLevel::~ScopedIsaLevel() { g_active.store(static_cast<int>(previous_), std::memory_order_release); }

CpuFeatures cpu_features() {
  CpuFeatures f = probed();
  f.active = active_isa_level();
  return f;
}

std::string CpuFeatures::to_string() const {
  std::string flags;
  auto add = [&](bool present, std::string_view name) {
    if (!present) return;
    if (!flags.empty()) flags += ' ';
    flags += name;
  };
  add(avx2, "avx2");
  add(fma, "fma");
  add(f16c, "f16c");
  add(avx512f, "avx512f");
  add(avx512cd, "avx512cd");
  add(avx512bw, "avx512bw");
  add(avx512dq, "avx512dq");
  add(avx512vl, "avx512vl");
  add(avx512_vnni, "avx512_vnni");
  add(avx512_bf16, "avx512_bf16");
  add(avx_vnni, "avx_vnni");
  return fmt::format("active {} (best {}; cpu: {})", persona::to_string(active), persona::to_string(best),
                     flags.empty() ? "no AVX features" : flags);
}

}  // namespace persona
