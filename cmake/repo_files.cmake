# moe_repo_files(<root> <out_var>): the files of the repository at <root>, relative to it, for the checks that read
# the whole tree (tests/docs, tests/style): git ls-files (tracked plus untracked-but-not-ignored, so a new file is
# checked before it is committed); without git, every file under <root> except build*/ and .git/. tests/fixtures/
# is data and is left out.
function(moe_repo_files root out_var)
    set(files "")
    find_program(GIT git)
    set(git_rc 1)
    if(GIT)
        execute_process(COMMAND ${GIT} -C ${root} ls-files --cached --others --exclude-standard
                        OUTPUT_VARIABLE listing RESULT_VARIABLE git_rc ERROR_QUIET)
    endif()
    if(git_rc EQUAL 0)
        string(REPLACE "\n" ";" files "${listing}")
    else()
        file(GLOB_RECURSE files LIST_DIRECTORIES false RELATIVE ${root} ${root}/*)
        list(FILTER files EXCLUDE REGEX "^(build[^/]*|\\.git)/")
    endif()
    list(FILTER files EXCLUDE REGEX "^tests/fixtures/")
    list(FILTER files EXCLUDE REGEX "^$")
    set(${out_var} ${files} PARENT_SCOPE)
endfunction()
