# Dependency lookup. Everything comes from installed packages (Debian: libeigen3-dev libxsimd-dev
# libfmt-dev libtbb-dev nlohmann-json3-dev libxxhash-dev libpcre2-dev, plus catch2 and libbenchmark-dev
# for tests and benchmarks);
# the build never touches the network.
find_package(Eigen3 3.4 REQUIRED NO_MODULE)
find_package(fmt 9 REQUIRED)
find_package(TBB 2021 REQUIRED)
find_package(xsimd 8.1 REQUIRED)
# Debian's xsimd 8.1 exports a link to an `xtl` target that does not exist; xsimd itself needs nothing.
set_target_properties(xsimd PROPERTIES INTERFACE_LINK_LIBRARIES "")
find_package(nlohmann_json 3.11 REQUIRED)
