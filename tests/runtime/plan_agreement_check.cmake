# `moe inspect --vram-budget X --ctx C` and `moe run --vram-budget X --ctx C` on the same model and backend must
# agree: the same number of expert slots, the same resident weights and KV cache, and inspect's workspace
# estimate at least what the engine allocated. Run as `cmake -DMOE=... -DMODEL=... -DBUDGET=... -DCTX=... -DDIR=...
# -P plan_agreement_check.cmake` by CTest (tests_run_flags.cmake).
cmake_minimum_required(VERSION 3.24)

file(REMOVE_RECURSE ${DIR})
file(MAKE_DIRECTORY ${DIR})
execute_process(COMMAND ${MOE} inspect ${MODEL} --json --vram-budget ${BUDGET} --ctx ${CTX} --backend cpu
                RESULT_VARIABLE rc OUTPUT_VARIABLE plan ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
    message(FATAL_ERROR "moe inspect: exit status ${rc}\n${plan}${err}")
endif()
execute_process(COMMAND ${MOE} run -m ${MODEL} --prompt-ids 1,2,3 -n 2 --vram-budget ${BUDGET} --ctx ${CTX}
                        --backend cpu --stats-json ${DIR}/s.json
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
    message(FATAL_ERROR "moe run: exit status ${rc}\n${out}${err}")
endif()
file(READ ${DIR}/s.json run)

string(JSON inspect_slots GET "${plan}" plan vram slots)
string(JSON run_slots GET "${run}" n_slots)
string(JSON inspect_slot_bytes GET "${plan}" plan slot_bytes)
string(JSON run_slot_bytes GET "${run}" slot_bytes)
string(JSON inspect_resident GET "${plan}" plan vram resident_bytes)
string(JSON run_resident GET "${run}" memory resident_bytes)
string(JSON inspect_kv GET "${plan}" plan vram kv_cache_bytes)
string(JSON run_kv GET "${run}" memory kv_cache_bytes)
string(JSON inspect_ws GET "${plan}" plan vram workspace_bytes)
string(JSON run_ws GET "${run}" memory workspace_bytes)
string(JSON run_ctx GET "${run}" memory n_ctx)
if(NOT inspect_slots EQUAL run_slots OR NOT inspect_slot_bytes EQUAL run_slot_bytes
   OR NOT inspect_resident EQUAL run_resident OR NOT inspect_kv EQUAL run_kv OR inspect_ws LESS run_ws
   OR NOT run_ctx EQUAL CTX)
    message(FATAL_ERROR "inspect and run disagree at --vram-budget ${BUDGET} --ctx ${CTX}: slots ${inspect_slots} vs "
                        "${run_slots} (of ${inspect_slot_bytes} vs ${run_slot_bytes} bytes), resident "
                        "${inspect_resident} vs ${run_resident}, KV cache ${inspect_kv} vs ${run_kv}, workspace "
                        "estimate ${inspect_ws} vs allocated ${run_ws}, run's n_ctx ${run_ctx}")
endif()
message(STATUS "inspect and run agree: ${run_slots} slots at --vram-budget ${BUDGET} --ctx ${CTX}")
