# Fails when a C, C++ or CUDA source of the repository is not formatted as the committed .clang-format says, with
# the pinned clang-format (Debian's clang-format-14: another major version lays code out differently, so the
# check would flip between machines). Lists each unformatted file and the command that fixes it.
#
# cmake -DROOT=<source dir> -DCLANG_FORMAT=<clang-format-14 or empty> -P format_check.cmake
# Files: git ls-files (tracked plus untracked-but-not-ignored), without git every file under ROOT except build*/.
cmake_minimum_required(VERSION 3.20)
if(NOT CLANG_FORMAT)
    message(FATAL_ERROR "format check: clang-format-14 not found; scripts/setup.sh installs it "
                        "(apt-get install clang-format-14)")
endif()
execute_process(COMMAND ${CLANG_FORMAT} --version OUTPUT_VARIABLE version)
if(NOT version MATCHES "version 14\\.")
    message(FATAL_ERROR "format check: ${CLANG_FORMAT} is not clang-format 14: ${version}")
endif()

include(${CMAKE_CURRENT_LIST_DIR}/../../cmake/repo_files.cmake)
moe_repo_files(${ROOT} files)
list(FILTER files INCLUDE REGEX "\\.(c|h|cpp|hpp|cu|cuh)$")

set(bad "")
foreach(f ${files})
    if(NOT EXISTS ${ROOT}/${f})
        continue()  # deleted in the working tree but still in the index
    endif()
    execute_process(COMMAND ${CLANG_FORMAT} --dry-run --Werror --style=file ${f} WORKING_DIRECTORY ${ROOT}
                    RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
    if(NOT rc EQUAL 0)
        list(APPEND bad ${f})
    endif()
endforeach()
list(LENGTH files n_files)
if(bad)
    list(LENGTH bad n_bad)
    string(REPLACE ";" "\n  " shown "${bad}")
    message(FATAL_ERROR "${n_bad} of ${n_files} source files are not formatted:\n  ${shown}\n"
                        "fix with: cmake --build <build dir> --target format")
endif()
message(STATUS "format check: ${n_files} source files formatted")
