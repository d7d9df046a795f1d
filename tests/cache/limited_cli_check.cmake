# Runs `moe` on hostile sizes under an address-space limit, as `cmake -D... -P limited_cli_check.cmake` from CTest:
# a refusal must come first, as a clear message and a plain exit status, never as an allocation that the limit
# turns into std::bad_alloc, a crash or an OOM kill.
#   MOE     the moe binary           ARGS   its arguments joined with '|'; "@DIR@" becomes a fresh scratch folder
#   DIR     that scratch folder      RC     the exit status expected
#   REGEX   a regular expression stderr must match
#   AS_KB   the address-space limit (ulimit -v) in KiB; 0 runs without one (sanitizer builds reserve terabytes)
#   TRACE_HEADER (optional) write @DIR@/in.trace: this header line, the column line and one row
#   LONG_LINE    (optional) write @DIR@/long.trace: a valid header, then a row of this many bytes without an end
cmake_minimum_required(VERSION 3.24)

file(REMOVE_RECURSE ${DIR})
file(MAKE_DIRECTORY ${DIR})
if(DEFINED TRACE_HEADER)
    file(WRITE ${DIR}/in.trace "${TRACE_HEADER}\nseq,token,layer,experts,weights\n0,0,0,1,\n")
endif()
if(DEFINED LONG_LINE)
    string(REPEAT "7" ${LONG_LINE} row)
    file(WRITE ${DIR}/long.trace "# moe-trace v1 model=m n_layers=2 n_experts=8 top_k=2\nseq,token,layer,experts,weights\n${row}")
endif()
string(REPLACE "@DIR@" "${DIR}" ARGS "${ARGS}")
string(REPLACE "|" ";" ARGS "${ARGS}")
if(AS_KB GREATER 0)
    # The shell applies the limit to itself and execs moe with it.
    set(cmd sh -c "ulimit -v ${AS_KB} && exec \"$0\" \"$@\"" ${MOE} ${ARGS})
else()
    set(cmd ${MOE} ${ARGS})
endif()
execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 60)
string(REPLACE ";" " " shown "${ARGS}")
if(NOT rc STREQUAL RC)
    message(FATAL_ERROR "moe ${shown} (address space ${AS_KB} KiB): exit status ${rc}, expected ${RC}\nstdout:\n${out}\nstderr:\n${err}")
endif()
if(NOT "${err}" MATCHES "${REGEX}")
    message(FATAL_ERROR "moe ${shown}: stderr does not match '${REGEX}'\nstdout:\n${out}\nstderr:\n${err}")
endif()
