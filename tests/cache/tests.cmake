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

include(${CMAKE_CURRENT_LIST_DIR}/tsan.cmake OPTIONAL)
