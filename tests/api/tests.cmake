# tests/api: the C API through libmoe_runtime.so (unit), the tiny C engine run end to end (e2e), the exported
# symbol set, and an install + find_package consumer build in a temp prefix.
moe_add_tests(api moe_runtime_shared moe_cache nlohmann_json::nlohmann_json)

if(TARGET tiny_engine)
    # Exits non-zero unless the offloaded outputs equal the fread reference bit for bit.
    foreach(model mixtral-tiny-f32 qwen3moe-tiny-f32)
        add_test(NAME api_tiny_engine_${model}
                 COMMAND tiny_engine tests/fixtures/${model}.gguf --tokens 24
                         --trace ${PROJECT_BINARY_DIR}/api_tiny_engine_${model}.trace)
        set_tests_properties(api_tiny_engine_${model} PROPERTIES WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                             LABELS "api;e2e" PASS_REGULAR_EXPRESSION "small budget bit-identical to the file reference: yes")
    endforeach()
    # The trace it wrote replays in the simulator.
    add_test(NAME api_tiny_engine_trace_replays
             COMMAND moe sim --trace ${PROJECT_BINARY_DIR}/api_tiny_engine_mixtral-tiny-f32.trace --capacity 4)
    set_tests_properties(api_tiny_engine_trace_replays PROPERTIES WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                         LABELS "api;e2e" DEPENDS api_tiny_engine_mixtral-tiny-f32 PASS_REGULAR_EXPRESSION "lru")
endif()

add_test(NAME api_exported_symbols
         COMMAND ${CMAKE_COMMAND} -DLIB=$<TARGET_FILE:moe_runtime_shared> -DNM=${CMAKE_NM}
                 -P ${CMAKE_CURRENT_LIST_DIR}/exports_check.cmake)
set_tests_properties(api_exported_symbols PROPERTIES LABELS "api;unit")

# A sanitizer build installs an instrumented library: the consumer must link the same runtime.
string(REPLACE ";" " " _moe_san_flags_str "${_moe_san_flags}")
add_test(NAME api_install_find_package
         COMMAND ${CMAKE_COMMAND} -DBUILD_DIR=${PROJECT_BINARY_DIR} -DSOURCE_DIR=${PROJECT_SOURCE_DIR}
                 -DWORK_DIR=${PROJECT_BINARY_DIR}/api_install_test -DGENERATOR=${CMAKE_GENERATOR}
                 -DC_COMPILER=${CMAKE_C_COMPILER} -DCXX_COMPILER=${CMAKE_CXX_COMPILER}
                 "-DSANITIZE_FLAGS=${_moe_san_flags_str}"
                 -P ${CMAKE_CURRENT_LIST_DIR}/install_check.cmake)
set_tests_properties(api_install_find_package PROPERTIES LABELS "api;e2e" TIMEOUT 300)
