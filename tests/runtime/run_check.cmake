# End-to-end check of `moe run`, run as `cmake -D... -P run_check.cmake` by CTest (tests_run.cmake).
#   MOE     the moe binary            ARGS  its arguments joined with '|'; "@DIR@" becomes a fresh scratch folder
#   DIR     that scratch folder       RC    the exit status expected
#   REGEX   (optional) a regular expression the combined stdout+stderr must match
#   TOKENS  (optional) the generated ids expected, comma-separated: compared with @DIR@/stats.json "tokens"
#   SIM_TOKENS (optional) replay @DIR@/run.trace with `moe sim` and expect it to hold this many tokens
cmake_minimum_required(VERSION 3.24)

include(${CMAKE_CURRENT_LIST_DIR}/cli_run.cmake)  # run MOE, check RC and REGEX

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

# Every successful run that wrote stats: the measured memory breakdown adds up to its total, the total stays
# within the budget (--vram-budget is the whole compute memory), and the links report what moved.
if(RC EQUAL 0 AND EXISTS ${DIR}/stats.json)
    file(READ ${DIR}/stats.json stats)
    set(sum 0)
    foreach(part resident_bytes kv_cache_bytes workspace_bytes expert_slot_bytes)
        string(JSON v GET "${stats}" memory ${part})
        math(EXPR sum "${sum} + ${v}")
    endforeach()
    string(JSON total GET "${stats}" memory total_bytes)
    string(JSON budget GET "${stats}" budget_bytes)
    string(JSON slots GET "${stats}" memory expert_slot_bytes)
    string(JSON n_slots GET "${stats}" n_slots)
    string(JSON slot GET "${stats}" slot_bytes)
    math(EXPR slots_expected "${n_slots} * ${slot}")
    if(NOT sum EQUAL total OR total GREATER budget OR NOT slots EQUAL slots_expected)
        message(FATAL_ERROR "moe ${shown}: memory parts sum to ${sum}, total ${total}, budget ${budget}, slots "
                            "${slots} (expected ${n_slots} x ${slot})\n${stats}")
    endif()
    string(JSON link0 GET "${stats}" links 0 name)
    string(JSON link_bytes GET "${stats}" links 0 bytes)
    string(JSON loaded GET "${stats}" bytes_loaded)
    string(JSON host_slots GET "${stats}" host_slots)
    if(host_slots GREATER 0)
        string(JSON loaded GET "${stats}" host_bytes_loaded)  # with a host tier the file fills that tier
    endif()
    string(JSON prefetch GET "${stats}" prefetch)
    # file->ram carries every byte read from the file. The streamer counts a read before the cache counts the load
    # (and the links are read after the cache's figures), so with prefetches that may still land it can be ahead.
    if(NOT link0 STREQUAL "file->ram" OR link_bytes LESS loaded
       OR (prefetch STREQUAL "none" AND NOT link_bytes EQUAL loaded))
        message(FATAL_ERROR "moe ${shown}: links[0] is ${link0} with ${link_bytes} bytes; the file loads were "
                            "${loaded} bytes (prefetch ${prefetch})")
    endif()
endif()

if(DEFINED SIM_TOKENS)
    execute_process(COMMAND ${MOE} sim --trace ${DIR}/run.trace --capacity 4 RESULT_VARIABLE src OUTPUT_VARIABLE sout
                    ERROR_VARIABLE serr)
    if(NOT src EQUAL 0 OR NOT "${sout}" MATCHES ", ${SIM_TOKENS} tokens, ")
        message(FATAL_ERROR "moe sim of the run's trace: status ${src}, expected ${SIM_TOKENS} tokens\n${sout}${serr}")
    endif()
endif()
