# The part of run_check.cmake and cli_check.cmake that is the same: in a fresh scratch folder DIR, run MOE with
# ARGS ('|'-joined, "@DIR@" replaced by the folder), expect exit status RC and, when given, output matching REGEX.
# Leaves rc, out, err and shown (the command line) to the including script.
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
