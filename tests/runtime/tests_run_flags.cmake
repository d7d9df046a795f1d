# End-to-end tests of `moe run --chat`, the budgets sized from free memory, --host-budget and the load progress
# line (labels runtime, e2e), checked by cli_check.cmake. The chat prompts are compared with transformers'
# rendering of each model's template (tests/fixtures/chat/templates.json); chat_template_test.cpp checks the
# token ids against Hugging Face tokenizers.
set(_moe_cli_check ${CMAKE_CURRENT_LIST_DIR}/cli_check.cmake)
set(_fx ${PROJECT_SOURCE_DIR}/tests/fixtures)

# moe_cli_test(<name> RC <status> [REGEX <re>] [NOT_REGEX <re>] [JSON stdout|<file>] [CHECKS <c>...]
#              [CHAT_PROMPT <model>] ARGS <args>...)
function(moe_cli_test name)
    cmake_parse_arguments(T "" "RC;REGEX;NOT_REGEX;JSON;CHAT_PROMPT" "ARGS;CHECKS" ${ARGN})
    string(JOIN "|" joined ${T_ARGS})
    set(defs -DMOE=$<TARGET_FILE:moe> "-DARGS=${joined}" -DRC=${T_RC} -DDIR=${CMAKE_CURRENT_BINARY_DIR}/cli_e2e/${name})
    foreach(opt REGEX NOT_REGEX JSON CHAT_PROMPT)
        if(DEFINED T_${opt})
            list(APPEND defs "-D${opt}=${T_${opt}}")
        endif()
    endforeach()
    if(DEFINED T_CHECKS)
        string(JOIN "^" checks ${T_CHECKS})
        list(APPEND defs "-DCHECKS=${checks}")
    endif()
    add_test(NAME ${name} COMMAND ${CMAKE_COMMAND} ${defs} -P ${_moe_cli_check} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    set_tests_properties(${name} PROPERTIES LABELS "runtime;e2e" TIMEOUT 120)
endfunction()

set(_tiny ${_fx}/mixtral-tiny-f32.gguf)

# --chat: the template of the architecture when the file has none, the file's own when it has one. One BOS (the
# template's), never a second one added by the tokenizer.
moe_cli_test(run.chat.mixtral_default RC 0
             REGEX "--chat: mistral template from the default for architecture llama .*: 26 prompt tokens"
             JSON @DIR@/s.json CHAT_PROMPT tests/fixtures/mixtral-tiny-f32.gguf
             CHECKS "chat_template=mistral" "prompt_tokens.0=1" "prompt_tokens.1=84" "prompt_tokens#26"
             ARGS run -m ${_tiny} -p "Hello world" --chat -n 4 --stats-json @DIR@/s.json)
# (The BPE fixture models' synthetic vocabularies have no byte symbol for '\n', which every chat format but
# Mistral's needs; their formats are checked in chat_template_test.cpp on the tokenizer fixtures.)
moe_cli_test(run.chat.template_in_file RC 0 REGEX "--chat: chatml template from tokenizer.chat_template"
             JSON @DIR@/s.json CHAT_PROMPT tests/fixtures/chat/mixtral-tiny-q4_0-chatml.gguf
             CHECKS "chat_template=chatml"
             ARGS run -m ${_fx}/chat/mixtral-tiny-q4_0-chatml.gguf -p "Hello world" --chat -n 4
                  --stats-json @DIR@/s.json)
# Without --chat the prompt is the text as given, BOS added by the tokenizer (SPM add_bos).
moe_cli_test(run.chat.off RC 0 JSON @DIR@/s.json CHECKS "prompt_text=Hello world" "prompt_tokens.0=1"
             ARGS run -m ${_tiny} -p "Hello world" -n 2 --stats-json @DIR@/s.json)
moe_cli_test(run.chat.unknown_template RC 1
             REGEX "mixtral-tiny-q4_0-llama3\\.gguf: unknown chat template: tokenizer\\.chat_template starts with \"\\{% set loop_messages.*run without --chat"
             ARGS run -m ${_fx}/chat/mixtral-tiny-q4_0-llama3.gguf -p hi --chat)
moe_cli_test(run.chat.unknown_template_without_chat RC 0
             ARGS run -m ${_fx}/chat/mixtral-tiny-q4_0-llama3.gguf -p hi -n 2)
moe_cli_test(run.chat.with_prompt_ids RC 2 REGEX "(--chat excludes --prompt-ids|--prompt-ids excludes --chat)"
             ARGS run -m ${_tiny} --prompt-ids 1,2,3 --chat)
moe_cli_test(run.chat.no_tokenizer RC 1 REGEX "mixtral-f32\\.gguf: cannot encode the prompt text"
             ARGS run -m ${_fx}/ref/mixtral-f32.gguf -p hi --chat)

# Budgets sized from free memory: printed with the figures; the stats say so. An explicit budget is not auto.
moe_cli_test(run.auto_budget.chosen RC 0
             REGEX "no --vram-budget given: [0-9.]+ [KMG]?i?B for expert slots in RAM = [0-9]+ slots of 24.00 KiB .* sized from .* resident weights - .* KV cache - .* workspace - .* margin = "
             JSON @DIR@/s.json CHECKS "budget_auto=ON" "budget_unlimited=OFF" "budget_bytes:NUMBER"
             ARGS run -m ${_tiny} -p hi -n 2 --backend cpu --stats-json @DIR@/s.json)
# An explicit budget is the whole compute memory: "hi" + 2 tokens needs ~257.7 KiB before the slots of 24 KiB, so
# 318K leaves room for 2 (memory.* is the measured breakdown; run_check.cmake checks that it adds up).
moe_cli_test(run.auto_budget.explicit RC 0 NOT_REGEX "no --vram-budget given"
             JSON @DIR@/s.json
             CHECKS "budget_auto=OFF" "budget_bytes=325632" "n_slots=2" "expert_budget_bytes=49152"
                    "memory.budget_bytes=325632" "memory.resident_bytes=167168" "memory.kv_cache_bytes=3072"
                    "memory.expert_slot_bytes=49152" "memory.n_ctx=6" "memory.workspace_bytes:NUMBER"
                    "memory.total_bytes:NUMBER" "links#1" "links.0.name=file->ram" "links.0.gb_per_s:NUMBER"
                    "links.0.seconds:NUMBER" "links.0.transfers:NUMBER"
             ARGS run -m ${_tiny} -p hi -n 2 --vram-budget 318K --stats-json @DIR@/s.json)

# --host-budget: a host tier under the expert slots (at least as many slots as the tier above). 324K is 2 slots
# after ~264.4 KiB for "Hello world" + 8 tokens. Two links: the file fills the host tier, the host tier the slots.
moe_cli_test(run.host_budget.tier RC 0
             REGEX "host tier +4 slots = 96.00 KiB pinned RAM: .*% of the misses above.*link +file->ram .* reads.*link +host->ram +[0-9.]+ [KM]?i?B in [1-9][0-9]* copies, [0-9.]+ GB/s"
             JSON @DIR@/s.json
             CHECKS "host_slots=4" "host_budget_bytes=98304" "host_hit_rate:NUMBER" "n_slots=2" "links#2"
                    "links.1.name=host->ram" "links.1.bytes:NUMBER"
             ARGS run -m ${_tiny} -p "Hello world" -n 8 --vram-budget 324K --host-budget 96K --stats-json @DIR@/s.json)
moe_cli_test(run.host_budget.too_small RC 3
             REGEX "mixtral-tiny-f32.gguf: host budget 24.00 KiB .* holds 1 slot\\(s\\) of 24.00 KiB, fewer than the 2 slot\\(s\\) of the expert tier above it; the host tier needs at least 49152 bytes"
             ARGS run -m ${_tiny} -p hi --vram-budget 333K --host-budget 24K)
moe_cli_test(run.host_budget.zero RC 2 REGEX "--host-budget 0: expected a positive size"
             ARGS run -m ${_tiny} -p hi --host-budget 0)
moe_cli_test(run.host_budget.suffix RC 2 REGEX "--host-budget" ARGS run -m ${_tiny} -p hi --host-budget 3Q)
moe_cli_test(run.host_budget.missing_model RC 1 REGEX "no-such-model\\.gguf"
             ARGS run -m ${_fx}/no-such-model.gguf -p hi --host-budget 1G --chat)

# Loading progress: stderr is not a terminal under CTest, so one line at the end and no bar.
moe_cli_test(run.load_progress.one_line RC 0 REGEX "moe run: loaded resident weights: 163.25 KiB from the file in"
             NOT_REGEX "loading resident weights" ARGS run -m ${_tiny} -p hi -n 2)

# `moe inspect` plans --vram-budget as `moe run` does (resident + KV cache + workspaces, then slots): the same slots
# for the same --ctx, at the smallest budget, a partial one and one past every expert.
foreach(case "q8_small|mixtral-tiny-q8_0.gguf|308K|64" "q8_mid|mixtral-tiny-q8_0.gguf|320K|64"
             "f32_mid|mixtral-tiny-f32.gguf|400K|40" "qwen3_all|qwen3moe-tiny-f32.gguf|2M|128")
    string(REPLACE "|" ";" case "${case}")
    list(GET case 0 tag)
    list(GET case 1 model)
    list(GET case 2 budget)
    list(GET case 3 ctx)
    add_test(NAME run.plan_agrees_with_inspect.${tag}
             COMMAND ${CMAKE_COMMAND} -DMOE=$<TARGET_FILE:moe> -DMODEL=${_fx}/${model} -DBUDGET=${budget} -DCTX=${ctx}
                     -DDIR=${CMAKE_CURRENT_BINARY_DIR}/cli_e2e/plan_${tag}
                     -P ${CMAKE_CURRENT_LIST_DIR}/plan_agreement_check.cmake
             WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    set_tests_properties(run.plan_agrees_with_inspect.${tag} PROPERTIES LABELS "runtime;e2e" TIMEOUT 120)
endforeach()
