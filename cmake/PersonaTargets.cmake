include(GNUInstallDirs)
include(CheckCXXCompilerFlag)

# Warnings, sanitizers and include interfaces for one persona target, set per target, never globally.
function(persona_setup_target target)
  get_target_property(type ${target} TYPE)
  if(NOT type STREQUAL "EXECUTABLE")
    add_library(persona::${target} ALIAS ${target})
    target_include_directories(${target} PUBLIC
      $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
      $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
    target_compile_features(${target} PUBLIC cxx_std_20)
    set_target_properties(${target} PROPERTIES
      POSITION_INDEPENDENT_CODE ON
      VERSION ${PROJECT_VERSION}
      SOVERSION ${PROJECT_VERSION_MAJOR})
  else()
    target_compile_features(${target} PRIVATE cxx_std_20)
  endif()
  set_target_properties(${target} PROPERTIES CXX_EXTENSIONS OFF)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion
                                             -Wno-sign-conversion)
    if(PERSONA_WERROR)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
  endif()
  persona_apply_sanitizers(${target})
endfunction()

function(persona_apply_sanitizers target)
  if(PERSONA_SANITIZE)
    list(JOIN PERSONA_SANITIZE "," sanitizers)
    get_target_property(type ${target} TYPE)
    set(scope PUBLIC)
    if(type STREQUAL "EXECUTABLE")
      set(scope PRIVATE)
    endif()
    target_compile_options(${target} ${scope} -fsanitize=${sanitizers} -fno-omit-frame-pointer
                                              -fno-sanitize-recover=all)
    target_link_options(${target} ${scope} -fsanitize=${sanitizers})
  endif()
endfunction()

# One kernel family (a component's kernels/ folder), named by the common prefix of its files, e.g.
# src/quant/kernels/quant: quant_reference.cpp (the scalar oracles) and quant_dispatch.cpp, built for the
# baseline like the rest of the library, and the per-level files quant_avx2.cpp, quant_avx512.cpp and, where
# the family has VNNI kernels, quant_avx512_vnni.cpp, each compiled with its level's instruction-set flags
# and picked at run time by the dispatch file (through src/core/kernel_dispatch.hpp).
function(persona_add_kernel_family target prefix)
  target_sources(${target} PRIVATE ${PROJECT_SOURCE_DIR}/${prefix}_reference.cpp
                                   ${PROJECT_SOURCE_DIR}/${prefix}_dispatch.cpp)
  if(NOT CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
    return()
  endif()
  # The library is built with -ffp-contract=off (oracles and kernels must round alike); the kernel files
  # turn contraction back on for xsimd's own math (exp's polynomial): their bit-exact kernels spell every
  # fused operation out (fused_multiply_add) and contain no a * b + c for the compiler to fuse.
  set(avx2_flags -mavx2 -mfma -mf16c -ffp-contract=fast)
  # Only what the avx512 level requires of the CPU (cpu_features.cpp): the compiler may emit any enabled
  # instruction anywhere in the file. VNNI/BF16 kernels get files of their own.
  set(avx512_flags -mavx512f -mavx512cd -mavx512bw -mavx512dq -mavx512vl -mfma -mf16c -ffp-contract=fast)
  list(JOIN avx512_flags " " avx512_joined)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # GCC 12's own avx512fintrin.h trips -W(maybe-)uninitialized on _mm512_undefined_*() (a false positive).
    list(APPEND avx512_flags -Wno-maybe-uninitialized -Wno-uninitialized)
  endif()
  set(avx512_vnni_flags ${avx512_flags} -mavx512vnni)
  set(levels avx2)
  check_cxx_compiler_flag("${avx512_joined}" PERSONA_COMPILER_HAS_AVX512)
  if(PERSONA_COMPILER_HAS_AVX512 AND PERSONA_AVX512_KERNELS)
    list(APPEND levels avx512)
    check_cxx_compiler_flag("${avx512_joined} -mavx512vnni" PERSONA_COMPILER_HAS_AVX512_VNNI)
    if(PERSONA_COMPILER_HAS_AVX512_VNNI)
      list(APPEND levels avx512_vnni)
    endif()
  endif()
  # The levels this build compiles, for the CPU probe (which reports none above them) and the dispatchers
  # (whose tables of other levels do not exist): the same for every family, so defined once per target.
  get_target_property(defined ${target} PERSONA_KERNEL_LEVELS)
  if(NOT defined)
    foreach(level IN LISTS levels)
      string(TOUPPER ${level} upper)
      target_compile_definitions(${target} PRIVATE PERSONA_HAVE_${upper}_KERNELS=1)
    endforeach()
    set_target_properties(${target} PROPERTIES PERSONA_KERNEL_LEVELS "${levels}")
  endif()
  foreach(level IN LISTS levels)
    set(file ${PROJECT_SOURCE_DIR}/${prefix}_${level}.cpp)
    if(EXISTS ${file})
      target_sources(${target} PRIVATE ${file})
      set_source_files_properties(${file} PROPERTIES COMPILE_OPTIONS "${${level}_flags}")
    endif()
  endforeach()
endfunction()
