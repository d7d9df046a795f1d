# End-to-end tests of `moe gen` (labels runtime, e2e): the small shape generated, inspected and run from token ids
# (gen_check.cmake), and the flag conventions of tests_cli_flags.cmake (moe_cli_test comes from
# tests_run_flags.cmake). model_gen_test.cpp checks the files themselves.
add_test(NAME gen.small_run COMMAND ${CMAKE_COMMAND} -DMOE=$<TARGET_FILE:moe> -DDIR=${CMAKE_CURRENT_BINARY_DIR}/gen_e2e/small
         -P ${CMAKE_CURRENT_LIST_DIR}/gen_check.cmake WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(gen.small_run PROPERTIES LABELS "runtime;e2e" TIMEOUT 120)

moe_cli_test(cli.flags.gen.unknown RC 2 REGEX "^moe gen: error: .*--frobnicate"
             ARGS gen --shape qwen3-moe-small -o @DIR@/m.gguf --frobnicate)
moe_cli_test(cli.flags.gen.shape RC 2
             REGEX "^moe gen: error: --shape: unknown shape 'qwen9' \\(expected one of qwen3-30b-a3b, mixtral-8x7b, qwen3-moe-small\\)"
             ARGS gen --shape qwen9 -o @DIR@/m.gguf)
moe_cli_test(cli.flags.gen.experts_type RC 2 REGEX "^moe gen: error: --experts-type: unknown type 'q5_k' \\(expected one of "
             ARGS gen --shape qwen3-moe-small -o @DIR@/m.gguf --experts-type q5_k)
moe_cli_test(cli.flags.gen.layers_negative RC 2
             REGEX "^moe gen: error: --layers: expected a non-negative integer, found '-1'"
             ARGS gen --shape qwen3-moe-small -o @DIR@/m.gguf --layers -1)
moe_cli_test(cli.flags.gen.layers_zero RC 2 REGEX "^moe gen: error: --layers 0: expected 1..1000"
             ARGS gen --shape qwen3-moe-small -o @DIR@/m.gguf --layers 0)
moe_cli_test(cli.flags.gen.no_output RC 2 REGEX "^moe gen: error: .*output.* is required" ARGS gen --shape qwen3-moe-small)
moe_cli_test(cli.help.gen RC 0 REGEX "--shape.*qwen3-30b-a3b.*--experts-type.*mxfp4.*--force" ARGS gen --help)
