# One convention for every subcommand (labels runtime, e2e), checked by cli_check.cmake (moe_cli_test comes from
# tests_run_flags.cmake): a flag the command does not know, or a value it cannot use, ends with exit status 2 and
# "moe <command>: error: <reason>"; a budget too small exits 3; --version and --help exit 0. Only the parser and
# the flag checks run, so nothing here needs a model to load (run's -m is never opened).
set(_fx ${PROJECT_SOURCE_DIR}/tests/fixtures)
set(_q8 ${_fx}/mixtral-tiny-q8_0.gguf)
set(_trace ${PROJECT_SOURCE_DIR}/tests/fixtures/traces/tiny.trace)
set(_synth trace --synthetic --layers 2 --experts 8 --top-k 2 --tokens 5 -o @DIR@/t.trace)

# Unknown flags.
moe_cli_test(cli.flags.inspect.unknown RC 2 REGEX "^moe inspect: error: .*--frobnicate"
             ARGS inspect ${_q8} --frobnicate)
moe_cli_test(cli.flags.sim.unknown RC 2 REGEX "^moe sim: error: .*--frobnicate"
             ARGS sim --trace ${_trace} --capacity 4 --frobnicate)
moe_cli_test(cli.flags.trace.unknown RC 2 REGEX "^moe trace: error: .*--frobnicate" ARGS ${_synth} --frobnicate)
moe_cli_test(cli.flags.bench_io.unknown RC 2 REGEX "^moe bench io: error: .*--frobnicate"
             ARGS bench io --file ${_q8} --expert-bytes 4K --frobnicate)
moe_cli_test(cli.flags.run.unknown RC 2 REGEX "^moe run: error: .*--frobnicate"
             ARGS run -m ${_fx}/no-such-model.gguf -p hi --frobnicate)
moe_cli_test(cli.flags.unknown_command RC 2 REGEX "^moe: unknown command 'frobnicate'" ARGS frobnicate)

# Bad values: sizes with a suffix moe does not know, negative counts, values out of range.
moe_cli_test(cli.flags.inspect.size_suffix RC 2 REGEX "^moe inspect: error: --vram-budget: unknown size suffix 'Q' in '10Q'"
             ARGS inspect ${_q8} --vram-budget 10Q)
moe_cli_test(cli.flags.inspect.size_negative RC 2 REGEX "^moe inspect: error: --host-budget: expected a size .*got '-1G'"
             ARGS inspect ${_q8} --host-budget=-1G)
moe_cli_test(cli.flags.inspect.size_overflow RC 2 REGEX "^moe inspect: error: --vram-budget: size '99999999999T' is too large"
             ARGS inspect ${_q8} --vram-budget 99999999999T)
# A zero budget is refused as moe run refuses it, not planned as a budget too small.
moe_cli_test(cli.flags.inspect.size_zero RC 2 REGEX "^moe inspect: error: --vram-budget 0: expected a positive size"
             ARGS inspect ${_q8} --vram-budget 0)
moe_cli_test(cli.flags.sim.capacity_negative RC 2 REGEX "^moe sim: error: --capacity: expected a non-negative integer, found '-3'"
             ARGS sim --trace ${_trace} --capacity -3)
moe_cli_test(cli.flags.sim.capacity_frac RC 2 REGEX "^moe sim: error: --capacity-frac 1.5 is outside"
             ARGS sim --trace ${_trace} --capacity-frac 1.5)
moe_cli_test(cli.flags.sim.policy RC 2 REGEX "^moe sim: error: --policy: unknown policy 'fifo'"
             ARGS sim --trace ${_trace} --capacity 4 --policy lru,fifo)
moe_cli_test(cli.flags.trace.tokens_negative RC 2 REGEX "^moe trace: error: --tokens: expected a non-negative integer, found '-5'"
             ARGS trace --synthetic --layers 2 --experts 8 --top-k 2 --tokens -5 -o @DIR@/t.trace)
moe_cli_test(cli.flags.trace.top_k RC 2 REGEX "^moe trace: error: synthetic trace: top-k 10 exceeds the 8 experts"
             ARGS trace --synthetic --layers 2 --experts 8 --top-k 10 --tokens 5 -o @DIR@/t.trace)
moe_cli_test(cli.flags.bench_io.size RC 2 REGEX "^moe bench io: error: --expert-bytes: unknown size suffix 'Q'"
             ARGS bench io --file ${_q8} --expert-bytes 12Q)
moe_cli_test(cli.flags.bench_io.qd RC 2 REGEX "^moe bench io: error: --qd: expected a non-negative integer, found '-1'"
             ARGS bench io --file ${_q8} --expert-bytes 4K --qd -1)
moe_cli_test(cli.flags.run.size_suffix RC 2 REGEX "^moe run: error: --vram-budget: unknown size suffix 'Q' in '10Q'"
             ARGS run -m ${_fx}/no-such-model.gguf -p hi --vram-budget 10Q)

# A budget too small: exit status 3.
moe_cli_test(cli.flags.sim.capacity_below_top_k RC 3 REGEX "^moe sim: error: capacity 1 is smaller than the trace's top_k=2"
             ARGS sim --trace ${_trace} --capacity 1)

# A bad file is status 1, whatever the command.
moe_cli_test(cli.flags.sim.missing_trace RC 1 REGEX "^moe sim: error: .*nope\\.trace: cannot open trace file: No such file"
             ARGS sim --trace @DIR@/nope.trace --capacity 4)

# --version and --help.
moe_cli_test(cli.version RC 0 REGEX "^moe ${PROJECT_VERSION}\n$" ARGS --version)
moe_cli_test(cli.help RC 0
             REGEX "commands:\n  run +[a-z].*\n  inspect +[a-z].*\n  sim +[a-z].*\n  trace +[a-z].*\n  bench +[a-z].*--version"
             ARGS --help)
moe_cli_test(cli.help.sim RC 0 REGEX "--capacity" ARGS sim --help)
moe_cli_test(cli.help.trace RC 0 REGEX "--synthetic" ARGS trace --help)
