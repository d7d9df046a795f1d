# Layout: every C/C++/CUDA source formatted by the committed .clang-format with the pinned clang-format-14
# (format_check.cmake). Nothing to build.
add_test(NAME style.format
         COMMAND ${CMAKE_COMMAND} -DROOT=${PROJECT_SOURCE_DIR} -DCLANG_FORMAT=${MOE_CLANG_FORMAT}
                 -P ${CMAKE_CURRENT_LIST_DIR}/format_check.cmake)
set_tests_properties(style.format PROPERTIES LABELS "style;unit" TIMEOUT 300)
