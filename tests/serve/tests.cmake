# End-to-end tests of `moe serve` (labels serve, e2e): the official `openai` Python client against servers the
# test starts on loopback, and a bounded load test. The Python environment with the client is made by
# scripts/setup.sh (part of the test command); MOE_TEST_PYTHON points elsewhere.
set(MOE_TEST_PYTHON ${PROJECT_SOURCE_DIR}/.deps/test-venv/bin/python CACHE FILEPATH
    "Python with the packages of scripts/requirements-test.txt (the serve tests)")
add_test(NAME serve.openai_client
         COMMAND ${MOE_TEST_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/openai_client_test.py --moe $<TARGET_FILE:moe>
         WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(serve.openai_client PROPERTIES LABELS "serve;e2e" TIMEOUT 300)
# 8 clients x 10 requests here; the committed benchmark (bench/results/serve-load-*.json) runs 8 x 50.
add_test(NAME serve.load
         COMMAND ${MOE_TEST_PYTHON} ${PROJECT_SOURCE_DIR}/scripts/serve_load_test.py --moe $<TARGET_FILE:moe>
                 --clients 8 --requests 10 --time-limit 120
         WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(serve.load PROPERTIES LABELS "serve;e2e" TIMEOUT 180)
