# End-to-end tests of `moe run` (labels runtime, e2e). Greedy decoding must give the same tokens whatever the
# expert budget (smallest workable, middle, unlimited), eviction policy, prefetch or thread count: the cache only
# decides where expert bytes live, never what is computed. The expected ids are checked independently by
# tests/runtime/generate_test.cpp: the first token equals the argmax of the Hugging Face transformers logits in
# tests/fixtures/ref (ref.json/ref.bin), and every later one the argmax of a teacher-forced batched evaluation.
set(_moe_run_check ${CMAKE_CURRENT_LIST_DIR}/run_check.cmake)
set(_fx ${PROJECT_SOURCE_DIR}/tests/fixtures)

# moe_run_test(<name> RC <status> [REGEX <re>] [TOKENS <a,b,c>] [SIM_TOKENS <n>] ARGS <args>...)
function(moe_run_test name)
    cmake_parse_arguments(T "" "RC;REGEX;TOKENS;SIM_TOKENS" "ARGS" ${ARGN})
    string(JOIN "|" joined ${T_ARGS})
    set(defs -DMOE=$<TARGET_FILE:moe> "-DARGS=${joined}" -DRC=${T_RC} -DDIR=${CMAKE_CURRENT_BINARY_DIR}/run_e2e/${name})
    foreach(opt REGEX TOKENS SIM_TOKENS)
        if(DEFINED T_${opt})
            list(APPEND defs "-D${opt}=${T_${opt}}")
        endif()
    endforeach()
    add_test(NAME run.${name} COMMAND ${CMAKE_COMMAND} ${defs} -P ${_moe_run_check} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    set_tests_properties(run.${name} PROPERTIES LABELS "runtime;e2e" TIMEOUT 120)
endfunction()

# --vram-budget is the whole compute memory: resident weights + KV cache + workspaces + expert slots. The budgets
# below sit half a slot above a whole number of slots (so a small change in the workspace estimate moves nothing).
# Mixtral reference model (no tokenizer: prompt as ids), prompt 0 of ref.json, -n 8 (16 positions): resident
# 163.25 KiB + KV 8 KiB + workspace ~87.6 KiB = ~258.9 KiB, then slots of 12 KiB: 289K = 2 slots (top-2, the
# smallest), 301K = 3, 313K = 4, 325K = 5.
set(_mx ${_fx}/ref/mixtral-f32.gguf)
set(_mx_prompt 1,17,42,99,5,77,3,120)
set(_mx_tokens 11,37,52,18,77,67,11,18)
foreach(cfg "unlimited" "min|--vram-budget|289K" "mid|--vram-budget|301K" "min_lfu|--vram-budget|289K|--policy|lfu"
            "lru_layer|--vram-budget|313K|--policy|lru-layer" "min_lfu_recent|--vram-budget|289K|--policy|lfu-recent"
            "spec|--prefetch|spec" "mid_spec|--vram-budget|325K|--prefetch|spec"
            "threads|--threads|2|--vram-budget|301K" "mid_history|--vram-budget|325K|--prefetch|history"
            "mid_both_deep|--vram-budget|325K|--prefetch|both|--prefetch-depth|2|--prefetch-k|3")
    string(REPLACE "|" ";" cfg "${cfg}")
    list(POP_FRONT cfg tag)
    moe_run_test(greedy.mixtral.${tag} RC 0 TOKENS ${_mx_tokens} REGEX "hit rate +[0-9.]+%"
                 ARGS run -m ${_mx} --prompt-ids ${_mx_prompt} -n 8 --stats-json @DIR@/stats.json ${cfg})
endforeach()
# Qwen3-MoE reference model (8 experts, q/k norms): prompt 0, ~259.7 KiB before the slots, slots rounded to 8 KiB:
# 280K = 2 slots (the smallest), 304K = 5.
foreach(cfg "unlimited" "min|--vram-budget|280K" "mid|--vram-budget|304K|--prefetch|spec")
    string(REPLACE "|" ";" cfg "${cfg}")
    list(POP_FRONT cfg tag)
    moe_run_test(greedy.qwen3moe.${tag} RC 0 TOKENS 108,108,108,108,6,80,108,114
                 ARGS run -m ${_fx}/ref/qwen3moe-f32.gguf --prompt-ids ${_mx_prompt} -n 8
                      --stats-json @DIR@/stats.json ${cfg})
endforeach()

# Sampling: one seed gives one token sequence, whatever the budget/policy/prefetch (generate_test.cpp checks the
# sampler itself against hand-computed distributions). -n 12 (20 positions): 291K = 2 slots.
foreach(cfg "unlimited" "min|--vram-budget|291K|--policy|lfu-recent|--prefetch|spec")
    string(REPLACE "|" ";" cfg "${cfg}")
    list(POP_FRONT cfg tag)
    moe_run_test(sampled.mixtral.${tag} RC 0 TOKENS 66,107,11,8,84,100,123,116,24,9,71,12
                 ARGS run -m ${_mx} --prompt-ids ${_mx_prompt} -n 12 --temp 0.9 --top-k 40 --top-p 0.95 --min-p 0.05
                      --repeat-penalty 1.1 --seed 7 --stats-json @DIR@/stats.json ${cfg})
endforeach()

# Text in, text out: the tiny Mixtral with a llama SPM tokenizer. "Hello world" is 11 tokens with BOS; 16
# generated, 15 of them evaluated, so the trace holds 26 tokens and `moe sim` replays it. 27 positions: ~268.5 KiB
# before the slots of 24 KiB: 328K = 2 slots (the smallest), 352K = 3.
set(_tiny ${_fx}/mixtral-tiny-f32.gguf)
set(_tiny_tokens 94,106,80,38,94,106,80,38,38,38,38,38,38,38,38,38)
foreach(cfg "unlimited" "min|--vram-budget|328K" "mid|--vram-budget|352K|--policy|lfu" "spec|--prefetch|spec")
    string(REPLACE "|" ";" cfg "${cfg}")
    list(POP_FRONT cfg tag)
    moe_run_test(text.tiny.${tag} RC 0 TOKENS ${_tiny_tokens} SIM_TOKENS 26 REGEX "^l w106atCl w106atC"
                 ARGS run -m ${_tiny} -p "Hello world" -n 16 --stats-json @DIR@/stats.json --trace @DIR@/run.trace
                      ${cfg})
endforeach()
moe_run_test(summary.tiny_unlimited RC 0
             REGEX "no --vram-budget given: 192.00 KiB for expert slots in RAM = 8 slots of 24.00 KiB \\(100.0% of the 8 experts: every expert fits\\), sized from .* (MemAvailable|memory.max).*loaded resident weights: 163.25 KiB.*prompt +11 tokens.*tokens/s.*decode +16 tokens generated, 15 evaluated.*policy lru, prefetch none, 8 slots.*hit rate.*per layer +0:[0-9.]+% 1:[0-9.]+%.*loaded .* bytes.*ms waiting"
             ARGS run -m ${_tiny} -p "Hello world" -n 16 --backend cpu)  # RAM sizing, also on a GPU machine
# The summary's memory line: the measured breakdown, its total, and the budget it stays under (run_check.cmake
# checks memory.* in the stats: the parts add up to the total and the total is <= the budget).
moe_run_test(summary.tiny_evicting RC 0
             REGEX "memory +resident 163.25 KiB \\+ KV cache 13.50 KiB \\+ workspace [0-9.]+ KiB \\+ 2 expert slot\\(s\\) of 24.00 KiB \\(48.00 KiB\\) = [0-9.]+ KiB <= budget 328.00 KiB \\(--vram-budget in RAM\\).*2 slots of 24.00 KiB.*[1-9][0-9]* evictions.*link +file->ram +[0-9.]+ [KM]iB in [1-9][0-9]* reads, [0-9.]+ GB/s"
             ARGS run -m ${_tiny} -p "Hello world" -n 16 --vram-budget 328K --stats-json @DIR@/stats.json)

# Refusals: non-zero status and a message naming the problem. The smallest budget is given with its breakdown.
moe_run_test(bad.budget_too_small RC 3
             REGEX "--vram-budget 300.00 KiB \\(307200 bytes\\) is too small: it must hold the resident weights, the KV cache and the workspaces besides the expert slots.*top-2 experts at once, so it needs at least 3[0-9][0-9].[0-9]+ KiB \\([0-9]+ bytes\\) = resident 163.25 KiB \\+ KV cache 13.50 KiB \\+ workspace [0-9.]+ KiB \\+ 2 expert slot\\(s\\) of 24.00 KiB \\(48.00 KiB\\)"
             ARGS run -m ${_tiny} -p "Hello world" -n 16 --vram-budget 300K)
moe_run_test(bad.budget_slots_only RC 3 REGEX "--vram-budget 48.00 KiB .* too small.*needs at least"
             ARGS run -m ${_tiny} -p hi --vram-budget 48K)  # the old meaning (slots only) is refused, not obeyed
moe_run_test(bad.lru_layer_budget RC 3
             REGEX "--vram-budget 301.00 KiB .* too small: .*policy lru-layer gives each of the 2 MoE layers.*needs at least [0-9.]+ KiB .* = resident 163.25 KiB .* 4 expert slot\\(s\\) of 12.00 KiB"
             ARGS run -m ${_mx} --prompt-ids ${_mx_prompt} -n 8 --vram-budget 301K --policy lru-layer)
moe_run_test(lru_layer_prefetch_off RC 0 TOKENS ${_mx_tokens} REGEX "prefetch spec turned off: policy lru-layer"
             ARGS run -m ${_mx} --prompt-ids ${_mx_prompt} -n 8 --vram-budget 325K --policy lru-layer --prefetch spec
                  --stats-json @DIR@/stats.json)
moe_run_test(bad.budget_suffix RC 2 REGEX "--vram-budget" ARGS run -m ${_tiny} -p hi --vram-budget 12Q)
moe_run_test(bad.missing_model RC 1 REGEX "no-such-model\\.gguf" ARGS run -m ${_fx}/no-such-model.gguf -p hi)
moe_run_test(bad.no_model_arg RC 2 REGEX "model is required" ARGS run -p hi)
moe_run_test(bad.no_prompt RC 2 REGEX "a prompt is required" ARGS run -m ${_tiny})
moe_run_test(bad.unknown_flag RC 2 REGEX "--frobnicate" ARGS run -m ${_tiny} -p hi --frobnicate)
moe_run_test(bad.prefetch_value RC 2 REGEX "--prefetch" ARGS run -m ${_tiny} -p hi --prefetch maybe)
moe_run_test(bad.prefetch_depth RC 2 REGEX "--prefetch-depth"
             ARGS run -m ${_tiny} -p hi --prefetch spec --prefetch-depth 0)
moe_run_test(bad.prefetch_k RC 2 REGEX "mixtral-tiny-f32.gguf: prefetch experts per layer 9: expected 0 .= top-k. up to the 4 experts of a layer"
             ARGS run -m ${_tiny} -p hi --prefetch spec --prefetch-k 9)
# The prefetcher's figures: a line with recall/precision/wasted overall and per layer (docs/prefetch.md).
moe_run_test(prefetch_summary RC 0 TOKENS ${_mx_tokens}
             REGEX "prefetch +depth 1, 2 per layer: recall [0-9.]+%, precision [0-9.]+%.*pf layer +recall/precision/wasted: 0:"
             ARGS run -m ${_mx} --prompt-ids ${_mx_prompt} -n 8 --vram-budget 325K --prefetch both
                  --stats-json @DIR@/stats.json)
moe_run_test(bad.policy RC 2 REGEX "unknown eviction policy 'mru'" ARGS run -m ${_tiny} -p hi --policy mru)
moe_run_test(bad.text_without_tokenizer RC 1 REGEX "mixtral-f32\\.gguf: cannot encode the prompt text.*--prompt-ids"
             ARGS run -m ${_mx} -p hi)
moe_run_test(bad.prompt_id_range RC 1 REGEX "token id 500 is outside the vocabulary .0, 128."
             ARGS run -m ${_mx} --prompt-ids 1,500)
moe_run_test(bad.prompt_id_text RC 1 REGEX "'x' is not a token id" ARGS run -m ${_mx} --prompt-ids 1,x)
moe_run_test(bad.ctx_too_small RC 2 REGEX "--ctx 4: the prompt has 8 tokens"
             ARGS run -m ${_mx} --prompt-ids ${_mx_prompt} --ctx 4)

# Results are never lost and outputs are checked first: signals sent to a real `moe run`, a closed pipe, a full
# stdout, refused output paths, the context bounds and the exit statuses (tests/runtime/run_results_check.sh).
add_test(NAME run.results_kept
         COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/run_results_check.sh $<TARGET_FILE:moe> ${_fx}
                 ${CMAKE_CURRENT_BINARY_DIR}/run_results)
set_tests_properties(run.results_kept PROPERTIES LABELS "runtime;e2e" TIMEOUT 180)
