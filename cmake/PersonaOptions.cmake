# Build options. Everything beyond the library itself defaults to ON only when persona is the top-level
# project, so a project that vendors persona builds just the library.
option(PERSONA_BUILD_TESTS "Build the test suite" ${PROJECT_IS_TOP_LEVEL})
option(PERSONA_BUILD_EXAMPLES "Build the examples" ${PROJECT_IS_TOP_LEVEL})
option(PERSONA_BUILD_PROGRAM "Build the persona command-line program" ${PROJECT_IS_TOP_LEVEL})
option(PERSONA_BUILD_BENCHMARKS "Build the benchmarks" ${PROJECT_IS_TOP_LEVEL})
option(PERSONA_INSTALL "Generate the install target and package config" ${PROJECT_IS_TOP_LEVEL})
option(PERSONA_WERROR "Treat compiler warnings as errors (ON in CI)" OFF)
option(PERSONA_ENABLE_CUDA "Build the CUDA backend" OFF)
# Off: only the AVX2 and scalar kernel levels. For builds that only run tests on a CPU without AVX-512
# (CI's sanitizer and fuzz builds there): they skip the two largest files they could never execute.
option(PERSONA_AVX512_KERNELS "Compile the AVX-512 kernel levels (x86-64)" ON)
set(PERSONA_SANITIZE "" CACHE STRING "Sanitizers to build with, e.g. address;undefined")

# Release by default, but only for persona's own build: a parent project's build type is its own.
if(PROJECT_IS_TOP_LEVEL AND NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
  set(CMAKE_BUILD_TYPE Release CACHE STRING "Build type" FORCE)
endif()
