# Code and docs must stand alone: no citation of a document the repository does not hold, no work-item names
# (citations_check.cmake says exactly what is refused). Runs wherever CMake does; nothing to build.
add_test(NAME docs.no_external_citations
         COMMAND ${CMAKE_COMMAND} -DROOT=${PROJECT_SOURCE_DIR} -P ${CMAKE_CURRENT_LIST_DIR}/citations_check.cmake)
set_tests_properties(docs.no_external_citations PROPERTIES LABELS "docs;unit" TIMEOUT 120)
