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

# The examples' command lines are strict: a value that is not what the flag takes is refused with the reason and
# exit status 2 (it used to become the default, unlimited, or wrap around); --help prints the usage. Run by
# tests/runtime/cli_run.cmake (expected status and output).
function(moe_example_flag_test name target rc regex)
    string(JOIN "|" joined ${ARGN})
    add_test(NAME ${name}
             COMMAND ${CMAKE_COMMAND} -DMOE=$<TARGET_FILE:${target}> "-DARGS=${joined}" -DRC=${rc} "-DREGEX=${regex}"
                     -DDIR=${PROJECT_BINARY_DIR}/api_example_flags/${name}
                     -P ${PROJECT_SOURCE_DIR}/tests/runtime/cli_run.cmake)
    set_tests_properties(${name} PROPERTIES WORKING_DIRECTORY ${PROJECT_SOURCE_DIR} LABELS "api;e2e" TIMEOUT 60)
endfunction()
set(_tiny_model ${PROJECT_SOURCE_DIR}/tests/fixtures/mixtral-tiny-f32.gguf)
if(TARGET tiny_engine)
    moe_example_flag_test(api_tiny_engine_flags.help tiny_engine 0 "^usage: tiny_engine MODEL" --help)
    moe_example_flag_test(api_tiny_engine_flags.budget_text tiny_engine 2
                          "tiny_engine: --budget 'abc': expected a positive number of bytes" ${_tiny_model} --budget abc)
    moe_example_flag_test(api_tiny_engine_flags.budget_negative tiny_engine 2
                          "tiny_engine: --budget '-1': expected a positive number of bytes" ${_tiny_model} --budget -1)
    moe_example_flag_test(api_tiny_engine_flags.tokens tiny_engine 2 "tiny_engine: --tokens '4294967312': expected a count"
                          ${_tiny_model} --tokens 4294967312)
    moe_example_flag_test(api_tiny_engine_flags.missing_value tiny_engine 2 "tiny_engine: --trace needs a value"
                          ${_tiny_model} --trace)
    moe_example_flag_test(api_tiny_engine_flags.unknown tiny_engine 2 "tiny_engine: unknown argument --frobnicate"
                          ${_tiny_model} --frobnicate 1)
endif()
if(TARGET mini_llm)
    moe_example_flag_test(api_mini_llm_flags.help mini_llm 0 "^usage: mini_llm MODEL" --help)
    moe_example_flag_test(api_mini_llm_flags.budget_text mini_llm 2
                          "mini_llm: --budget 'abc': expected a positive number of bytes"
                          ${_tiny_model} --prompt-ids 1,2 --budget abc)
    moe_example_flag_test(api_mini_llm_flags.budget_negative mini_llm 2
                          "mini_llm: --host-budget '-1': expected a positive number of bytes"
                          ${_tiny_model} --prompt-ids 1,2 --host-budget -1)
    # 4294967297 = 2^32 + 1 used to wrap around to token 1.
    moe_example_flag_test(api_mini_llm_flags.token_id_wraps mini_llm 2
                          "mini_llm: --prompt-ids '1,4294967297': expected 1 to 1024 comma-separated token ids"
                          ${_tiny_model} --prompt-ids 1,4294967297)
    moe_example_flag_test(api_mini_llm_flags.token_id_negative mini_llm 2 "mini_llm: --prompt-ids '1,-2'"
                          ${_tiny_model} --prompt-ids 1,-2)
    moe_example_flag_test(api_mini_llm_flags.n mini_llm 2 "mini_llm: -n '8x': expected a count"
                          ${_tiny_model} --prompt-ids 1,2 -n 8x)
    moe_example_flag_test(api_mini_llm_flags.depth mini_llm 2 "mini_llm: --prefetch-depth '0': expected a count"
                          ${_tiny_model} --prompt-ids 1,2 --prefetch-depth 0)
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
