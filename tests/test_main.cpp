// Catch2's main for every test binary; the tests themselves are in the *_test.cpp files.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

// The suite is written against Catch2 v2 (Debian's 2.13): v3 changed the headers and the main.
static_assert(CATCH_VERSION_MAJOR == 2, "persona's tests need Catch2 v2");
