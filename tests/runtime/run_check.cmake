# End-to-end check of `moe run`, run as `cmake -D... -P run_check.cmake` by CTest (tests_run.cmake).
#   MOE     the moe binary            ARGS  its arguments joined with '|'; "@DIR@" becomes a fresh scratch folder
#   DIR     that scratch folder       RC    the exit status expected
#   REGEX   (optional) a regular expression the combined stdout+stderr must match
#   TOKENS  (optional) the generated ids expected, comma-separated: compared with @DIR@/stats.json "tokens"
#   SIM_TOKENS (optional) replay @DIR@/run.trace with `moe sim` and expect it to hold this many tokens
cmake_minimum_required(VERSION 3.24)

file(REMOVE_RECURSE ${DIR})
file(MAKE_DIRECTORY ${DIR})
string(REPLACE "@DIR@" "${DIR}" ARGS "${ARGS}")
string(REPLACE "|" ";" ARGS "${ARGS}")
execute_process(COMMAND ${MOE} ${ARGS} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
string(REPLACE ";" " " shown "${ARGS}")
if(NOT rc STREQUAL RC)
    message(FATAL_ERROR "moe ${shown}: exit status ${rc}, expected ${RC}\nstdout:\n${out}\nstderr:\n${err}")
endif()
if(DEFINED REGEX AND NOT "${out}${err}" MATCHES "${REGEX}")
    message(FATAL_ERROR "moe ${shown}: output does not match '${REGEX}'\nstdout:\n${out}\nstderr:\n${err}")
endif()

if(DEFINED TOKENS)
    file(READ ${DIR}/stats.json stats)
    string(JSON n LENGTH "${stats}" tokens)
    set(got "")
    if(n GREATER 0)
        math(EXPR last "${n} - 1")
        foreach(i RANGE ${last})
            string(JSON t GET "${stats}" tokens ${i})
            list(APPEND got ${t})
        endforeach()
    endif()
    string(JOIN "," got ${got})
    if(NOT got STREQUAL TOKENS)
        message(FATAL_ERROR "moe ${shown}: generated tokens ${got}, expected ${TOKENS}\nstderr:\n${err}")
    endif()
    # The figures a script reads must be there and be numbers (prefetch_recall: null unless measured).
    foreach(key hit_rate prompt_tokens_per_s decode_tokens_per_s bytes_loaded budget_bytes n_slots)
        string(JSON type TYPE "${stats}" ${key})
        if(NOT type STREQUAL "NUMBER")
            message(FATAL_ERROR "moe ${shown}: stats.json '${key}' is ${type}, expected a number")
        endif()
    endforeach()
    string(JSON type TYPE "${stats}" prefetch_recall)
    string(JSON n_layers LENGTH "${stats}" per_layer)
    if(NOT (type STREQUAL "NULL" OR type STREQUAL "NUMBER") OR n_layers LESS 1)
        message(FATAL_ERROR "moe ${shown}: stats.json prefetch_recall is ${type} / per_layer has ${n_layers} rows")
    endif()
endif()

if(DEFINED SIM_TOKENS)
    execute_process(COMMAND ${MOE} sim --trace ${DIR}/run.trace --capacity 4 RESULT_VARIABLE src OUTPUT_VARIABLE sout
                    ERROR_VARIABLE serr)
    if(NOT src EQUAL 0 OR NOT "${sout}" MATCHES ", ${SIM_TOKENS} tokens, ")
        message(FATAL_ERROR "moe sim of the run's trace: status ${src}, expected ${SIM_TOKENS} tokens\n${sout}${serr}")
    endif()
endif()
