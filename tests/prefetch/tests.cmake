# prefetch/ end-to-end checks of `moe bench io`. Every mode must read the same bytes
# (--verify compares checksums across modes and exits non-zero otherwise), single-file and split models.
add_test(NAME prefetch_bench_io_model
         COMMAND moe bench io -m tests/fixtures/mixtral-tiny-q8_0.gguf --verify --json --qd 4 --chunk 8K
                 --modes uring,uring-buffered,pread,pread-direct,mmap
         WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(prefetch_bench_io_model PROPERTIES LABELS "prefetch;e2e" PASS_REGULAR_EXPRESSION "\"fio_command\"")
add_test(NAME prefetch_bench_io_split_model
         COMMAND moe bench io -m tests/fixtures/mixtral-tiny-q8_0-split-00001-of-00002.gguf --verify --sample 5
         WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(prefetch_bench_io_split_model PROPERTIES LABELS "prefetch;e2e"
                     PASS_REGULAR_EXPRESSION "every mode agrees")
add_test(NAME prefetch_bench_io_bad_mode COMMAND moe bench io --file CMakeLists.txt --expert-bytes 1K --modes spdk
         WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(prefetch_bench_io_bad_mode PROPERTIES LABELS "prefetch;e2e" WILL_FAIL TRUE)
