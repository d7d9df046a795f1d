# End-to-end tests of `moe inspect` (labels runtime, e2e): every committed fixture with a model description is
# inspected with --json --layout and checked against its Python-made .expected.json; broken files, bad flags and
# impossible budgets must give a non-zero exit and a message naming the problem. The checks live in
# inspect_check.cmake so they run wherever CMake does (no Python needed at test time).
set(_moe_check ${CMAKE_CURRENT_LIST_DIR}/inspect_check.cmake)
set(_fx ${PROJECT_SOURCE_DIR}/tests/fixtures)

# moe_inspect_test(<name> RC <status> [REGEX <re>] [EXPECTED <json>] ARGS <args>...)
function(moe_inspect_test name)
    cmake_parse_arguments(T "" "RC;REGEX;EXPECTED" "ARGS" ${ARGN})
    # the argument list travels as one '|'-joined string: a ';' would split it on the add_test command line
    string(JOIN "|" joined ${T_ARGS})
    set(defs -DMOE=$<TARGET_FILE:moe> "-DARGS=${joined}" -DRC=${T_RC})
    if(DEFINED T_REGEX)
        list(APPEND defs "-DREGEX=${T_REGEX}")
    endif()
    if(DEFINED T_EXPECTED)
        list(APPEND defs -DEXPECTED=${T_EXPECTED})
    endif()
    add_test(NAME inspect.${name} COMMAND ${CMAKE_COMMAND} ${defs} -P ${_moe_check}
             WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    set_tests_properties(inspect.${name} PROPERTIES LABELS "runtime;e2e" TIMEOUT 60)
endfunction()

file(GLOB_RECURSE _expected CONFIGURE_DEPENDS ${_fx}/*.expected.json)
foreach(exp ${_expected})
    file(READ ${exp} _ref)
    string(JSON _has_model ERROR_VARIABLE _err TYPE "${_ref}" model)
    if(_err)
        continue()  # a valid file that is not an MoE model (dense-tiny): covered below
    endif()
    string(REGEX REPLACE "\\.expected\\.json$" "" model ${exp})
    file(RELATIVE_PATH rel ${_fx} ${model})
    string(REGEX REPLACE "[/]" "_" tname "${rel}")
    moe_inspect_test(json.${tname} RC 0 EXPECTED ${exp} ARGS inspect ${model} --json --layout)
endforeach()

# Directories open too (the HF layout); the split GGUF opens from its first shard.
moe_inspect_test(dir.mixtral_hf RC 0 REGEX "architecture llama \\(mixtral\\)"
                 ARGS inspect ${_fx}/mixtral-tiny-hf)
moe_inspect_test(dir.qwen3_sharded RC 0 REGEX "safetensors, 2 file"
                 ARGS inspect ${_fx}/qwen3moe-tiny-hf-sharded)

# Human output with a partial fit, planned as moe run plans --vram-budget: 163.25 KiB resident (F32) + KV cache for
# 64 positions + workspaces (~287.6 KiB), then 8 KiB slots; 308K leaves room for 2 slots.
moe_inspect_test(human.partial_fit RC 0
                 REGEX "capacity plan \\(slot = 8.00 KiB; KV cache for 64 positions \\(--ctx\\), cpu backend.*vram +308.00 KiB: resident 163.25 KiB \\+ KV cache 32.00 KiB \\+ workspace [0-9.]+ KiB.*2 expert slots = 25.0% of the 8 routed experts"
                 ARGS inspect ${_fx}/mixtral-tiny-q8_0.gguf --vram-budget 308K --ctx 64 --backend cpu --host-budget 20K)
moe_inspect_test(human.layout RC 0 REGEX "blk 1 moe 1 expert 3.*gate +blk.1.ffn_gate_exps.weight"
                 ARGS inspect ${_fx}/mixtral-tiny-q8_0.gguf --layout)

# Impossible budgets: flagged in the plan, exit status 3 (docs/inspect-json.md).
moe_inspect_test(budget.below_resident RC 3
                 REGEX "impossible: .*--vram-budget 100.00 KiB .* too small: it must hold the resident weights, the KV cache and the workspaces"
                 ARGS inspect ${_fx}/mixtral-tiny-q8_0.gguf --vram-budget 100K --ctx 64 --backend cpu)
moe_inspect_test(budget.below_top_k RC 3
                 REGEX "top-2 experts at once, so it needs at least [0-9.]+ KiB .* = resident 163.25 KiB \\+ KV cache 32.00 KiB \\+ workspace [0-9.]+ KiB \\+ 2 expert slot\\(s\\) of 8.00 KiB"
                 ARGS inspect ${_fx}/mixtral-tiny-q8_0.gguf --vram-budget 300K --ctx 64 --backend cpu)
moe_inspect_test(budget.json_flag RC 3 REGEX "\"feasible\": false"
                 ARGS inspect ${_fx}/mixtral-tiny-q8_0.gguf --json --vram-budget 100K)

# Bad input: exit status 1 and a message naming the file and the problem.
moe_inspect_test(bad.truncated_gguf RC 1 REGEX "error: .*truncated\\.gguf: .*(end of the file|truncated)"
                 ARGS inspect ${_fx}/bad/truncated.gguf)
moe_inspect_test(bad.magic RC 1 REGEX "error: .*bad-magic\\.gguf: .*magic"
                 ARGS inspect ${_fx}/bad/bad-magic.gguf)
moe_inspect_test(bad.empty RC 1 REGEX "error: .*empty\\.gguf"
                 ARGS inspect ${_fx}/bad/empty.gguf)
moe_inspect_test(bad.truncated_safetensors RC 1 REGEX "error: .*truncated\\.safetensors: .*data_offsets"
                 ARGS inspect ${_fx}/bad/truncated.safetensors)
moe_inspect_test(bad.dense_model RC 1 REGEX "not a Mixture-of-Experts model: .*llama\\.expert_count"
                 ARGS inspect ${_fx}/dense-tiny-f16.gguf)
moe_inspect_test(bad.missing_file RC 1 REGEX "no-such-model\\.gguf"
                 ARGS inspect ${_fx}/no-such-model.gguf)
# A bad flag value: exit status 2 (tests_cli_flags.cmake checks the convention for every command).
moe_inspect_test(bad.budget_suffix RC 2 REGEX "--vram-budget"
                 ARGS inspect ${_fx}/mixtral-tiny-q8_0.gguf --vram-budget 12Q)
moe_inspect_test(bad.no_model_arg RC 2 REGEX "model is required" ARGS inspect)
moe_inspect_test(bad.unknown_flag RC 2 REGEX "--frobnicate" ARGS inspect ${_fx}/mixtral-tiny-q8_0.gguf --frobnicate)
include(${CMAKE_CURRENT_LIST_DIR}/tests_run.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/tests_run_flags.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/tests_bench.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/tests_cli_flags.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/tests_gen.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/tests_lean_start.cmake)

# The CPU kernels are chosen at run time (runtime/cpu_dot.h): CI's default run exercises the best instruction set
# of its machine. These runs repeat the fidelity and invariant tests with each other kernel set, so a kernel that
# only the other set uses cannot break unnoticed. A set this CPU cannot run is reported as skipped, not passed.
foreach(isa ref avx2)
    foreach(t forward_test llamacpp_ref_test backend_cpu_test)
        if(TARGET ${t})
            add_test(NAME ${t}.isa_${isa} COMMAND ${t} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
            set_tests_properties(${t}.isa_${isa} PROPERTIES ENVIRONMENT MOE_CPU_ISA=${isa} LABELS "runtime;unit"
                                 SKIP_REGULAR_EXPRESSION "cannot run ${isa} kernels" TIMEOUT 300)
        endif()
    endforeach()
endforeach()
