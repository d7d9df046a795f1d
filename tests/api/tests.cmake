# tests/api: the C API through libmoe_runtime.so (unit), the tiny C engine run end to end (e2e), the exported
# symbol set, and an install + find_package consumer build in a temp prefix.
# engine_api_test also links the static runtime to compare the C API with runtime/engine.h directly (the shared
# library exports only moe_* C symbols, so the two copies never meet), and runs the `moe` binary.
moe_add_tests(api moe_runtime_shared moe_runtime nlohmann_json::nlohmann_json)
add_dependencies(engine_api_test moe)

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

if(TARGET mini_llm)
    # mini_llm (examples/mini_llm): a decoder of its own over the C API, with a budget smaller than the model, must
    # generate the tokens `moe run` generates (mini_llm_check.cmake). ref/*: the transformers reference models.
    set(_fx ${PROJECT_SOURCE_DIR}/tests/fixtures)
    foreach(cfg "mixtral|ref/mixtral-f32.gguf|8|"
                "qwen3moe_host|ref/qwen3moe-f32.gguf|16|--host-budget|49152"
                "mixtral_tiny_host|mixtral-tiny-f32.gguf|16|--budget|73728|--host-budget|122880"
                "mixtral_tiny_spec|mixtral-tiny-f32.gguf|16|--budget|147456|--prefetch|both|--prefetch-depth|2")
        string(REPLACE "|" ";" cfg "${cfg}")
        list(POP_FRONT cfg tag model n)
        string(JOIN "|" extra ${cfg})
        add_test(NAME api_mini_llm_${tag}
                 COMMAND ${CMAKE_COMMAND} -DMOE=$<TARGET_FILE:moe> -DMINI_LLM=$<TARGET_FILE:mini_llm>
                         -DMODEL=${_fx}/${model} -DPROMPT=1,17,42,99,5,77,3,120 -DN=${n} "-DMINI_ARGS=${extra}"
                         -DDIR=${PROJECT_BINARY_DIR}/api_mini_llm/${tag} -P ${CMAKE_CURRENT_LIST_DIR}/mini_llm_check.cmake)
        set_tests_properties(api_mini_llm_${tag} PROPERTIES WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                             LABELS "api;e2e" TIMEOUT 120)
    endforeach()
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
