# The LLS engine as a CPU-only static library (edgeml_lls) and its two programs: edgeml-finetune and the C++
# tests. Included by csrc/programs.cmake (the package build) and csrc/lls/CMakeLists.txt (the stand-alone and
# aarch64 cross build); expects EDGEML_LLS_DIR = csrc/lls. Programs need neither CUDA nor Python at run time.
file(GLOB EDGEML_LLS_SOURCES CONFIGURE_DEPENDS ${EDGEML_LLS_DIR}/*.cpp)
list(FILTER EDGEML_LLS_SOURCES EXCLUDE REGEX ".*_main\\.cpp$")
add_library(edgeml_lls STATIC ${EDGEML_LLS_SOURCES})
target_include_directories(edgeml_lls PUBLIC ${EDGEML_LLS_DIR}/..)
target_compile_options(edgeml_lls PRIVATE -Wall -Wextra -Wpedantic)
# Optional: split the GEMM rows / depthwise channels across OpenMP threads (results do not depend on the count).
option(EDGEML_LLS_OPENMP "Multi-thread the LLS engine kernels of the standalone programs with OpenMP" OFF)
if(EDGEML_LLS_OPENMP)
  find_package(OpenMP REQUIRED COMPONENTS CXX)
  target_link_libraries(edgeml_lls PUBLIC OpenMP::OpenMP_CXX)
endif()

add_executable(edgeml-finetune ${EDGEML_LLS_DIR}/finetune_main.cpp)
target_link_libraries(edgeml-finetune PRIVATE edgeml_lls)
add_executable(edgeml-lls-tests ${EDGEML_LLS_DIR}/engine_tests_main.cpp)
target_link_libraries(edgeml-lls-tests PRIVATE edgeml_lls)
