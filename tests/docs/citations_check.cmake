# Fails when a source or doc file of the repository points its reader at something the repository does not
# hold: a Markdown document named as a citation (`name.md`, `dir/name.md`) for one of the notes that used to
# live outside the tree (the model-format brief, the design sketch, the style guide), or a work item ("issue"
# followed by a number, "(Owner" followed by a colon). A cited document is fine when the path resolves to a file of the repository,
# relative to the repository root or to the citing file's folder (docs/model-formats.md, a link from one doc to
# another). Files under tests/fixtures/ are data and are not read.
#
# cmake -DROOT=<source dir> -P citations_check.cmake
# Files: git ls-files (tracked plus untracked-but-not-ignored, so a new file is checked before it is committed);
# without git, every file under ROOT except build*/ and .git/.
cmake_minimum_required(VERSION 3.20)
if(NOT ROOT)
    message(FATAL_ERROR "citations_check: pass -DROOT=<repository root>")
endif()

include(${CMAKE_CURRENT_LIST_DIR}/../../cmake/repo_files.cmake)
moe_repo_files(${ROOT} files)

# Case-insensitive spellings of the three document names (CMake regexes have no flag for it).
set(doc_re "([Mm][Oo][Dd][Ee][Ll]-[Ff][Oo][Rr][Mm][Aa][Tt][Ss]|[Ss][Tt][Yy][Ll][Ee]|[Dd][Ee][Ss][Ii][Gg][Nn])[.][Mm][Dd]")
set(item_re "[Ii][Ss][Ss][Uu][Ee] #?[0-9]|[(][Oo][Ww][Nn][Ee][Rr]:")

set(bad "")
set(n_bad 0)
foreach(f ${files})
    if(NOT EXISTS ${ROOT}/${f} OR IS_DIRECTORY ${ROOT}/${f})
        continue()  # deleted in the working tree but still in the index
    endif()
    file(STRINGS ${ROOT}/${f} hits ENCODING UTF-8 REGEX "${doc_re}|${item_re}")
    get_filename_component(dir ${f} DIRECTORY)
    foreach(line IN LISTS hits)
        set(why "")
        if(line MATCHES "${item_re}")
            set(why "names a work item")
        endif()
        string(REGEX MATCHALL "[A-Za-z0-9_./-]*${doc_re}" cited "${line}")
        foreach(c ${cited})
            set(found FALSE)
            foreach(base "" "${dir}/")
                cmake_path(SET p NORMALIZE "${base}${c}")
                list(FIND files "${p}" at)
                if(at GREATER -1)
                    set(found TRUE)
                endif()
            endforeach()
            if(NOT found)
                set(why "cites '${c}', which is not a file of this repository")
            endif()
        endforeach()
        if(why)
            string(STRIP "${line}" text)
            string(APPEND bad "  ${f}: ${why}: ${text}\n")
            math(EXPR n_bad "${n_bad} + 1")
        endif()
    endforeach()
endforeach()

if(n_bad GREATER 0)
    message(FATAL_ERROR "${n_bad} line(s) point at documents or work items outside the repository; state the fact "
                        "in the comment, or move it into docs/ and cite that file:\n${bad}")
endif()
list(LENGTH files n_files)
message(STATUS "citations_check: ${n_files} files, no citation of a missing document or work item")
