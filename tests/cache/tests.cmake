# Extra registrations for tests/cache: `moe sim` / `moe trace` end to end (label e2e), and the concurrent
# cache's TSan registration when its file is present.
set(_moe_traces ${PROJECT_SOURCE_DIR}/tests/fixtures/traces)

# name, expected-output regex, arguments... (PASS_REGULAR_EXPRESSION ignores the exit status, so error cases
# are checked by their message; moe's main returns 1 on every moe::error.)
function(moe_cli_test name regex)
    add_test(NAME ${name} COMMAND $<TARGET_FILE:moe> ${ARGN})
    set_tests_properties(${name} PROPERTIES WORKING_DIRECTORY ${PROJECT_SOURCE_DIR} LABELS "cache;e2e"
                                            PASS_REGULAR_EXPRESSION "${regex}")
endfunction()

# Hand-computed in tests/cache/simulator_test.cpp: LRU 6/16, Belady 8/16, 10 misses x 24 KiB per expert.
moe_cli_test(cli_sim_tiny "lru +16 +6 +37.50% +2.500 +12.50 pts"
             sim --trace ${_moe_traces}/tiny.trace --capacity 4)
moe_cli_test(cli_sim_tiny_json "\"policy\": \"belady\""
             sim --trace ${_moe_traces}/tiny.trace --capacity-frac 0.5 --json --per-layer)
moe_cli_test(cli_sim_model_bytes "lru +16 +6 +37.50% +2.500 +12.50 pts +240.00 KiB"
             sim --trace ${_moe_traces}/tiny.trace --capacity 4 --model ${PROJECT_SOURCE_DIR}/tests/fixtures/mixtral-tiny-f32.gguf)
moe_cli_test(cli_sim_sweep "smallest capacity reaching 80.0% hits"
             sim --trace ${_moe_traces}/mixtral_like.trace --sweep --target-hit-rate 0.8)
moe_cli_test(cli_sim_unknown_policy "unknown policy 'fifo': valid policies are lru, lru-layer, lfu, lfu-recent, belady"
             sim --trace ${_moe_traces}/tiny.trace --capacity 4 --policy lru,fifo)
moe_cli_test(cli_sim_capacity_below_top_k "capacity 1 is smaller than the trace's top_k=2"
             sim --trace ${_moe_traces}/tiny.trace --capacity 1)
moe_cli_test(cli_sim_bad_frac "--capacity-frac 1.5 is outside \\(0, 1\\]"
             sim --trace ${_moe_traces}/tiny.trace --capacity-frac 1.5)
moe_cli_test(cli_sim_no_capacity "give --capacity N or --capacity-frac F"
             sim --trace ${_moe_traces}/tiny.trace)
moe_cli_test(cli_sim_missing_trace "nope.trace: cannot open trace file"
             sim --trace nope.trace --capacity 4)
moe_cli_test(cli_trace_bad_top_k "top-k 10 exceeds the 8 experts"
             trace --synthetic --layers 2 --experts 8 --top-k 10 --tokens 5 -o ${PROJECT_BINARY_DIR}/bad.trace)

# Generate, then replay what was generated.
moe_cli_test(cli_trace_generate "wrote .*model=synthetic-zipf-s1.2-r0.4-c0.5, 400 rows, 1600 accesses"
             trace --synthetic --layers 4 --experts 16 --top-k 4 --tokens 100 --seed 7 --skew 1.2 --reuse 0.4
             --layer-corr 0.5 -o ${PROJECT_BINARY_DIR}/cli_generated.trace)
set_tests_properties(cli_trace_generate PROPERTIES FIXTURES_SETUP cli_generated_trace)
moe_cli_test(cli_sim_generated "model=synthetic-zipf-s1.2-r0.4-c0.5, 4 layers x 16 experts, top-4, 100 tokens"
             sim --trace ${PROJECT_BINARY_DIR}/cli_generated.trace --capacity-frac 0.25)
set_tests_properties(cli_sim_generated PROPERTIES FIXTURES_REQUIRED cli_generated_trace)

# Hostile sizes under a 1 GiB address-space limit (limited_cli_check.cmake): each must end in a clear refusal
# with its exit status (1 bad file, 2 bad flag value), before anything is sized from it. Without the checks these
# allocated tens of GB (or, under the limit, died of std::bad_alloc).
set(_moe_limited_check ${CMAKE_CURRENT_LIST_DIR}/limited_cli_check.cmake)
if(MOE_SANITIZE)
    set(_moe_as_kb 0)  # sanitizer runtimes reserve terabytes of address space up front
else()
    set(_moe_as_kb 1048576)
endif()
# moe_limited_cli_test(<name> RC <status> REGEX <re> [TRACE_HEADER <line>] [LONG_LINE <bytes>] ARGS <args>...)
function(moe_limited_cli_test name)
    cmake_parse_arguments(T "" "RC;REGEX;TRACE_HEADER;LONG_LINE" "ARGS" ${ARGN})
    string(JOIN "|" joined ${T_ARGS})
    set(defs -DMOE=$<TARGET_FILE:moe> "-DARGS=${joined}" -DRC=${T_RC} "-DREGEX=${T_REGEX}" -DAS_KB=${_moe_as_kb}
             -DDIR=${CMAKE_CURRENT_BINARY_DIR}/limited/${name})
    foreach(opt TRACE_HEADER LONG_LINE)
        if(DEFINED T_${opt})
            list(APPEND defs "-D${opt}=${T_${opt}}")
        endif()
    endforeach()
    add_test(NAME ${name} COMMAND ${CMAKE_COMMAND} ${defs} -P ${_moe_limited_check}
             WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    set_tests_properties(${name} PROPERTIES LABELS "cache;e2e" TIMEOUT 90)
endfunction()

moe_limited_cli_test(limits.trace_synthetic_huge_shape RC 2
                     REGEX "^moe trace: error: synthetic trace: n_layers=1000000 is above the limit of 4096 layers"
                     ARGS trace --synthetic --layers 1000000 --experts 1000000 --top-k 2 --tokens 10 -o @DIR@/t.trace)
moe_limited_cli_test(limits.trace_synthetic_too_many_rows RC 2
                     REGEX "^moe trace: error: synthetic trace: 100000000 tokens x 48 layers is above the limit of 2097152 rows"
                     ARGS trace --synthetic --layers 48 --experts 128 --top-k 8 --tokens 100000000 -o @DIR@/t.trace)
moe_limited_cli_test(limits.sim_header_huge_shape RC 1
                     REGEX "^moe sim: error: .*in\.trace:1: header n_layers=20000 is above the limit of 4096 layers"
                     TRACE_HEADER "# moe-trace v1 model=m n_layers=20000 n_experts=20000 top_k=2"
                     ARGS sim --trace @DIR@/in.trace --capacity 4)
moe_limited_cli_test(limits.sim_header_too_many_experts RC 1
                     REGEX "^moe sim: error: .*in\.trace:1: header n_layers x n_experts = 4096 x 65536 = 268435456 experts is above the limit"
                     TRACE_HEADER "# moe-trace v1 model=m n_layers=4096 n_experts=65536 top_k=2"
                     ARGS sim --trace @DIR@/in.trace --sweep)
moe_limited_cli_test(limits.sim_dev_zero RC 1
                     REGEX "^moe sim: error: /dev/zero: cannot read trace file: expected a regular file, found a character device"
                     ARGS sim --trace /dev/zero --capacity 4)
moe_limited_cli_test(limits.sim_line_without_end RC 1
                     REGEX "^moe sim: error: .*long\.trace:3: line longer than the limit of 65536 bytes"
                     LONG_LINE 300000 ARGS sim --trace @DIR@/long.trace --capacity 4)

include(${CMAKE_CURRENT_LIST_DIR}/tsan.cmake OPTIONAL)
