# Standalone programs (no Python): the on-device LLS fine-tuner and the engine's C++ tests.
# They link a CPU-only copy of csrc/lls (edgeml_lls), so they need neither CUDA nor Python at run time.
file(GLOB EDGEML_LLS_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/csrc/lls/*.cpp)
list(FILTER EDGEML_LLS_SOURCES EXCLUDE REGEX ".*_main\\.cpp$")
add_library(edgeml_lls STATIC ${EDGEML_LLS_SOURCES})
target_include_directories(edgeml_lls PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/csrc)
target_compile_options(edgeml_lls PRIVATE -Wall -Wextra -Wpedantic)
# Optional: split the GEMM rows / depthwise channels across OpenMP threads (results do not depend on the count).
option(EDGEML_LLS_OPENMP "Multi-thread the LLS engine kernels of the standalone programs with OpenMP" OFF)
if(EDGEML_LLS_OPENMP)
  find_package(OpenMP REQUIRED COMPONENTS CXX)
  target_link_libraries(edgeml_lls PUBLIC OpenMP::OpenMP_CXX)
endif()

add_executable(edgeml-finetune ${CMAKE_CURRENT_SOURCE_DIR}/csrc/lls/finetune_main.cpp)
target_link_libraries(edgeml-finetune PRIVATE edgeml_lls)
add_executable(edgeml-lls-tests ${CMAKE_CURRENT_SOURCE_DIR}/csrc/lls/engine_tests_main.cpp)
target_link_libraries(edgeml-lls-tests PRIVATE edgeml_lls)
if(NOT SKBUILD)
  enable_testing()
  add_test(NAME edgeml-lls-tests COMMAND edgeml-lls-tests)
endif()
if(SKBUILD)
  # Shipped in the wheel as edgeml/bin/edgeml-finetune (edgeml.lls.device.finetune_binary finds it).
  install(TARGETS edgeml-finetune DESTINATION edgeml/bin)
endif()
