# A command that needs no GPU must not pay for CUDA, run as `cmake -D... -P lean_start_check.cmake` by CTest
# (tests_lean_start.cmake):
#   MOE      the binary             ARGS  its arguments joined with '|'
#   LIMIT_KB the address-space limit (ulimit -v, through bash) the command must succeed under
#   NO_CUDA  (optional, ON) the dynamic loader must not open a CUDA library (libcuda, libcudart, libcublas*):
#            checked with glibc's LD_DEBUG=libs trace, which names every library looked up, dlopen'd ones included
# Mapping cuBLAS alone takes more address space than LIMIT_KB, and initialising the driver reserves far more, so
# either one done eagerly fails the first check; the second catches them even where the limit would not.
cmake_minimum_required(VERSION 3.24)

string(REPLACE "|" ";" ARGS "${ARGS}")
string(REPLACE ";" " " shown "${ARGS}")
set(script "ulimit -v \"$0\" || exit 97")
if(NO_CUDA)
    string(APPEND script "; export LD_DEBUG=libs")
endif()
string(APPEND script "; exec \"$@\"")
execute_process(COMMAND bash -c "${script}" ${LIMIT_KB} ${MOE} ${ARGS}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc STREQUAL "97")
    message(FATAL_ERROR "bash could not set ulimit -v ${LIMIT_KB}")
endif()
if(NOT rc STREQUAL "0")
    message(FATAL_ERROR "moe ${shown} under ulimit -v ${LIMIT_KB}: exit status ${rc}, expected 0\n"
                        "stdout:\n${out}\nstderr:\n${err}")
endif()
if(NO_CUDA AND err MATCHES "library=(libcu(da|dart|blas)[^ \n]*)")
    message(FATAL_ERROR "moe ${shown} loaded ${CMAKE_MATCH_1}: a run that needs no GPU must not load CUDA\n"
                        "stdout:\n${out}")
endif()
message(STATUS "moe ${shown}: ok under ulimit -v ${LIMIT_KB}")
