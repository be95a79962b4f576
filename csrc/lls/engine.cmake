# The LLS engine as a CPU-only static library (edgeml_lls) and its two programs: edgeml-finetune and the C++
# tests. Included by csrc/programs.cmake (the package build, which also links edgeml_lls into edgeml._C) and
# csrc/lls/CMakeLists.txt (the stand-alone and aarch64 cross build); expects EDGEML_LLS_DIR = csrc/lls.
# Programs need neither CUDA nor Python at run time.
include(CheckCXXCompilerFlag)
file(GLOB EDGEML_LLS_SOURCES CONFIGURE_DEPENDS ${EDGEML_LLS_DIR}/*.cpp)
list(FILTER EDGEML_LLS_SOURCES EXCLUDE REGEX ".*_main\\.cpp$")
add_library(edgeml_lls STATIC ${EDGEML_LLS_SOURCES})
target_include_directories(edgeml_lls PUBLIC ${EDGEML_LLS_DIR}/..)
target_compile_options(edgeml_lls PRIVATE -Wall -Wextra -Wpedantic)

# The GEMM kernel is Eigen's (header-only, so the aarch64 cross build needs nothing for the target).
find_package(Eigen3 3.3 CONFIG QUIET)
if(NOT TARGET Eigen3::Eigen)
  message(FATAL_ERROR "edgeml: the LLS engine needs Eigen >= 3.3 (header-only): install it (Debian/Ubuntu: "
                      "apt-get install libeigen3-dev, or `make system-deps` as root; macOS: brew install eigen) "
                      "or point CMake at it with -DEigen3_DIR=<prefix>/share/eigen3/cmake")
endif()
target_link_libraries(edgeml_lls PRIVATE Eigen3::Eigen)

# The int8 GEMM of frozen int8 layers is gemmlowp's (header-only too; its kernels are picked by the target's ISA
# macros, so the aarch64 cross build reads the host's headers: search outside the toolchain's root as well). The
# include folder is gemmlowp's own root (as its CMake package and TFLite use it), never all of /usr/include, which
# would shadow a cross toolchain's C library headers.
find_path(EDGEML_GEMMLOWP_INCLUDE_DIR public/gemmlowp.h PATH_SUFFIXES gemmlowp CMAKE_FIND_ROOT_PATH_BOTH
          DOC "gemmlowp's root folder (holding public/gemmlowp.h)")
if(NOT EDGEML_GEMMLOWP_INCLUDE_DIR)
  message(FATAL_ERROR "edgeml: the LLS engine needs gemmlowp (header-only): install it (Debian/Ubuntu: "
                      "apt-get install libgemmlowp-dev, or `make system-deps` as root) or point CMake at it with "
                      "-DEDGEML_GEMMLOWP_INCLUDE_DIR=<gemmlowp's root, holding public/gemmlowp.h>")
endif()
target_include_directories(edgeml_lls SYSTEM PRIVATE ${EDGEML_GEMMLOWP_INCLUDE_DIR})
# gemmlowp's AVX2 kernels are opt-in (used only where the target has AVX2, else SSE4.1 / NEON): on a Zen 4 they made
# the int8 SmallConv step ~1.25x faster than the SSE4.1 ones (ties on VWW).
target_compile_definitions(edgeml_lls PRIVATE GEMMLOWP_ENABLE_AVX2)

# The engine is compiled on the machine that runs it: target its vector ISA (AVX2/FMA/AVX-512, NEON, ...).
# Eigen picks its kernel at compile time, and with plain SSE2 its GEMM runs at less than half the speed.
# -mtune=generic: GCC 12's -mtune=znver3 (what -march=native implies on Zen 3/4) made Eigen's GEMM
# 1.2-1.9x slower in csrc/lls micro-benchmarks. Cross builds keep the toolchain's baseline (aarch64: NEON).
option(EDGEML_LLS_NATIVE "Compile the LLS engine for this machine's CPU (-march=native)" ON)
if(EDGEML_LLS_NATIVE AND NOT CMAKE_CROSSCOMPILING)
  check_cxx_compiler_flag("-march=native" EDGEML_HAS_MARCH_NATIVE)
  check_cxx_compiler_flag("-mtune=generic" EDGEML_HAS_MTUNE_GENERIC)
  if(EDGEML_HAS_MARCH_NATIVE)
    target_compile_options(edgeml_lls PRIVATE -march=native)
    if(EDGEML_HAS_MTUNE_GENERIC)
      target_compile_options(edgeml_lls PRIVATE -mtune=generic)
    endif()
  endif()
endif()

# Threads: a pool of std::threads (lls/parallel.h). OpenMP only for its `simd` reductions (no runtime library):
# one OpenMP runtime fewer in a process that also holds PyTorch's.
find_package(Threads REQUIRED)
target_link_libraries(edgeml_lls PUBLIC Threads::Threads)
check_cxx_compiler_flag("-fopenmp-simd" EDGEML_HAS_OPENMP_SIMD)
if(EDGEML_HAS_OPENMP_SIMD)
  target_compile_options(edgeml_lls PRIVATE -fopenmp-simd)
endif()

add_executable(edgeml-finetune ${EDGEML_LLS_DIR}/finetune_main.cpp)
target_link_libraries(edgeml-finetune PRIVATE edgeml_lls)
add_executable(edgeml-lls-tests ${EDGEML_LLS_DIR}/engine_tests_main.cpp)
target_link_libraries(edgeml-lls-tests PRIVATE edgeml_lls)
