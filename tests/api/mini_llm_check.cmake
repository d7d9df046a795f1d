# The embedding proof, run by CTest as `cmake -D... -P mini_llm_check.cmake`: mini_llm (examples/mini_llm, an
# engine of its own that reaches moe-runtime only through the C header) and `moe run` greedily generate from the
# same model and prompt; the token ids must be the same. mini_llm's expert budget must be smaller than the model's
# experts and its expert tier must have evicted (experts really streamed).
#   MOE, MINI_LLM   the two binaries         MODEL, PROMPT, N   model file, comma-separated prompt ids, tokens
#   DIR             a scratch folder         MINI_ARGS          extra mini_llm arguments, joined with '|'
cmake_minimum_required(VERSION 3.24)

file(REMOVE_RECURSE ${DIR})
file(MAKE_DIRECTORY ${DIR})
execute_process(COMMAND ${MOE} run -m ${MODEL} --prompt-ids ${PROMPT} -n ${N} --stats-json ${DIR}/stats.json
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
    message(FATAL_ERROR "moe run failed (${rc}):\n${out}\n${err}")
endif()
file(READ ${DIR}/stats.json stats)
string(JSON n LENGTH "${stats}" tokens)
set(want "")
math(EXPR last "${n} - 1")
foreach(i RANGE ${last})
    string(JSON t GET "${stats}" tokens ${i})
    list(APPEND want ${t})
endforeach()
string(JOIN "," want ${want})

string(REPLACE "|" ";" MINI_ARGS "${MINI_ARGS}")
execute_process(COMMAND ${MINI_LLM} ${MODEL} --prompt-ids ${PROMPT} -n ${N} --trace ${DIR}/mini.trace ${MINI_ARGS}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
    message(FATAL_ERROR "mini_llm failed (${rc}):\n${out}\n${err}")
endif()
if(NOT out MATCHES "tokens: ([0-9,]+)")
    message(FATAL_ERROR "mini_llm printed no tokens:\n${out}\n${err}")
endif()
set(got ${CMAKE_MATCH_1})
if(NOT got STREQUAL want)
    message(FATAL_ERROR "mini_llm generated ${got}; moe run generated ${want}\n${out}")
endif()
if(NOT out MATCHES "\\(([0-9]+) expert bytes\\); budget ([0-9]+) bytes")
    message(FATAL_ERROR "mini_llm printed no budget line:\n${out}")
endif()
set(model_bytes ${CMAKE_MATCH_1})
set(budget ${CMAKE_MATCH_2})
if(NOT budget LESS model_bytes)
    message(FATAL_ERROR "mini_llm ran with a budget of ${budget} bytes, not smaller than the model's ${model_bytes}")
endif()
if(NOT out MATCHES "expert tier: [0-9]+ hits, [0-9]+ misses, [0-9]+ loads, ([0-9]+) evictions")
    message(FATAL_ERROR "mini_llm printed no expert tier statistics:\n${out}")
endif()
if(CMAKE_MATCH_1 EQUAL 0)
    message(FATAL_ERROR "mini_llm's expert tier never evicted: the budget did not make experts stream\n${out}")
endif()
message(STATUS "same ${N} tokens (${got}) with a budget of ${budget} of ${model_bytes} expert bytes\n${out}")
