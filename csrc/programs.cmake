# Standalone programs (no Python): the on-device LLS fine-tuner and the engine's C++ tests.
set(EDGEML_LLS_DIR ${CMAKE_CURRENT_SOURCE_DIR}/csrc/lls)
include(${EDGEML_LLS_DIR}/engine.cmake)
if(NOT SKBUILD)
  enable_testing()
  add_test(NAME edgeml-lls-tests COMMAND edgeml-lls-tests)
endif()
if(SKBUILD)
  # Shipped in the wheel as edgeml/bin/edgeml-finetune (edgeml.lls.device.finetune_binary finds it).
  install(TARGETS edgeml-finetune DESTINATION edgeml/bin)
endif()
