# End-to-end tests of `moe bench run` (labels runtime, e2e), checked by cli_check.cmake (moe_cli_test comes from
# tests_run_flags.cmake). They check the flags, the JSON schema, the budgets (slots per percentage, clamping to the
# smallest workable budget) and how llama.cpp's answer is read, through stand-in scripts in llamacpp_fakes/ (run
# with python3) so the result does not depend on whether llama-cpp-python is installed. No timing is asserted.
set(_fx ${PROJECT_SOURCE_DIR}/tests/fixtures)
set(_tiny ${_fx}/mixtral-tiny-f32.gguf)
set(_fakes ${CMAKE_CURRENT_LIST_DIR}/llamacpp_fakes)
set(_small --prompt-tokens 8 --gen-tokens 4 --threads 1)

# The tiny Mixtral: 2 MoE layers x 4 experts = 8 slots of 24 KiB, top-2. 100% = 8 slots, 50% = 4, 25% = 2 (the
# minimum), 10% = 0 -> raised to 2.
moe_cli_test(bench.run.json RC 0
             REGEX "budget 10% = 0 of 8 expert slots is below the smallest workable budget: raised to top-2 = 2 slots \\(48.00 KiB\\)"
             JSON stdout
             CHECKS "prompt_tokens=8" "gen_tokens=4" "threads=1" "n_experts_total=8" "top_k=2" "slot_bytes=24576"
                    "min_budget_bytes=49152" "backend=cpu" "budgets#4"
                    "budgets.0.percent=100" "budgets.0.n_slots=8" "budgets.0.budget_bytes=196608" "budgets.0.clamped=OFF"
                    "budgets.1.n_slots=4" "budgets.2.n_slots=2" "budgets.2.clamped=OFF"
                    "budgets.3.percent=10" "budgets.3.n_slots=2" "budgets.3.budget_bytes=49152" "budgets.3.clamped=ON"
                    "budgets.3.percent_effective=25.0"
                    "budgets.0.prompt_tokens_per_s:NUMBER" "budgets.0.decode_tokens_per_s:NUMBER"
                    "budgets.0.hit_rate:NUMBER" "budgets.0.decode_hit_rate:NUMBER" "budgets.0.bytes_loaded:NUMBER"
                    "budgets.0.decode_bytes_loaded:NUMBER" "budgets.0.wait_ms:NUMBER" "budgets.0.evictions=0"
                    "budgets.0.total_bytes:NUMBER" "budgets.0.memory.resident_bytes=167168"
                    "budgets.0.memory.kv_cache_bytes=6656" "budgets.0.memory.expert_slot_bytes=196608"
                    "budgets.3.memory.expert_slot_bytes=49152" "budgets.3.memory.workspace_bytes:NUMBER"
                    "llama_cpp.status=off"
             ARGS bench run -m ${_tiny} --budgets 100,50,25,10 ${_small} --json --llama-cpp off)
moe_cli_test(bench.run.table RC 0
             REGEX "budget +slots +bytes +total +prompt tok/s +decode tok/s +hit rate +decode hit +loaded.*100% +8/8 +192.00 KiB +[0-9.]+ KiB .*\\*10% +2/8 +48.00 KiB +[0-9.]+ KiB .*raised to the smallest workable budget: top-2 = 2 slots = 48.00 KiB.*total = what the engine held in compute memory: resident 163.25 KiB \\+ KV cache 6.50 KiB \\+ workspace [0-9.]+ KiB \\+ the slots.*llama.cpp: off"
             ARGS bench run -m ${_tiny} --budgets 100,10 ${_small} --llama-cpp off)
moe_cli_test(bench.run.default_budgets RC 0 JSON stdout
             CHECKS "budgets#3" "budgets.0.percent=100" "budgets.1.percent=50" "budgets.2.percent=25" "policy=lru"
             ARGS bench run -m ${_tiny} ${_small} --json --llama-cpp off)
# With the prefetcher: the mode is recorded and each budget reports its recall; a bad mode is refused.
moe_cli_test(bench.run.prefetch RC 0 JSON stdout
             CHECKS "prefetch=both" "budgets.1.prefetch_recall:NUMBER"
             ARGS bench run -m ${_tiny} ${_small} --json --llama-cpp off --prefetch both)
moe_cli_test(bench.run.bad_prefetch RC 2 REGEX "--prefetch: bogus"
             ARGS bench run -m ${_tiny} ${_small} --prefetch bogus)

# llama.cpp's side, read from the script's JSON (stand-ins), and printed beside moe's figures.
moe_cli_test(bench.run.llama_ok RC 0 JSON stdout
             CHECKS "llama_cpp.status=ok" "llama_cpp.prompt_tokens_per_s=123.5" "llama_cpp.decode_tokens_per_s:NUMBER"
                    "llama_cpp.prompt_tokens=8" "llama_cpp.gen_tokens=4"
             ARGS bench run -m ${_tiny} --budgets 50 ${_small} --json --llama-cpp-script ${_fakes}/ok.py)
moe_cli_test(bench.run.llama_ok_table RC 0
             REGEX "llama.cpp  cpu \\(llama-cpp-python fake, same GGUF, 1 threads, every expert in RAM\\): prompt 123.5 tokens/s, decode 45.6 tokens/s"
             ARGS bench run -m ${_tiny} --budgets 50 ${_small} --llama-cpp-script ${_fakes}/ok.py)
moe_cli_test(bench.run.llama_not_installed RC 0 REGEX "llama.cpp: not installed \\(pip install llama-cpp-python\\)"
             ARGS bench run -m ${_tiny} --budgets 50 ${_small} --llama-cpp-script ${_fakes}/not_installed.py)
moe_cli_test(bench.run.llama_garbage RC 0 JSON stdout
             CHECKS "llama_cpp.status=failed" "budgets#1"
             ARGS bench run -m ${_tiny} --budgets 50 ${_small} --json --llama-cpp-script ${_fakes}/garbage.py)
moe_cli_test(bench.run.llama_wrong_count RC 0 REGEX "llama.cpp: failed: .*measured 1 prompt / 1 generated tokens, asked for 8 / 4"
             ARGS bench run -m ${_tiny} --budgets 50 ${_small} --llama-cpp-script ${_fakes}/wrong_count.py)
moe_cli_test(bench.run.llama_missing_script RC 0 REGEX "llama.cpp: failed: .*no-such-script\\.py not found"
             ARGS bench run -m ${_tiny} --budgets 50 ${_small} --llama-cpp-script ${_fakes}/no-such-script.py)
moe_cli_test(bench.run.llama_needs_gguf RC 0 JSON stdout CHECKS "llama_cpp.status=skipped" "budgets.0.n_slots=4"
             ARGS bench run -m ${_fx}/mixtral-tiny-hf --budgets 50 ${_small} --json --llama-cpp-script ${_fakes}/ok.py)

# --routing-trace: each MoE layer's experts replayed from a moe-trace v1 file of the model's shape (the committed
# hand-written 2 layers x 4 experts, top-2 trace, on the reference Mixtral of that shape); every budget row runs it
# and the output says so. Without it the routing is the router's. A trace of another shape is refused up front.
set(_ref_mixtral tests/fixtures/ref/mixtral-f32.gguf)
set(_tiny_trace tests/fixtures/traces/tiny.trace)
moe_cli_test(bench.run.routing_trace RC 0
             REGEX "prefetch none, routing trace tests/fixtures/traces/tiny\\.trace.*budget +slots.*100% +8/8 .*50% +4/8 "
             ARGS bench run -m ${_ref_mixtral} --budgets 100,50 --prompt-tokens 8 --gen-tokens 4 --threads 1
                  --routing-trace ${_tiny_trace} --llama-cpp off)
moe_cli_test(bench.run.routing_trace_json RC 0 JSON stdout
             CHECKS "routing=trace tests/fixtures/traces/tiny.trace" "budgets#2" "budgets.1.n_slots=4"
             ARGS bench run -m ${_ref_mixtral} --budgets 100,50 ${_small} --json --llama-cpp off
                  --routing-trace ${_tiny_trace})
moe_cli_test(bench.run.routing_router RC 0 JSON stdout CHECKS "routing=router"
             ARGS bench run -m ${_ref_mixtral} --budgets 50 ${_small} --json --llama-cpp off)
moe_cli_test(bench.run.routing_trace_shape RC 1
             REGEX "routing trace tests/fixtures/traces/mixtral_like\\.trace: its shape is 32 MoE layers x 8 experts, top-2, but the model .* has 2 MoE layers x 4 experts, top-2"
             ARGS bench run -m ${_ref_mixtral} --budgets 50 ${_small} --llama-cpp off
                  --routing-trace tests/fixtures/traces/mixtral_like.trace)

# Bad flags and files.
moe_cli_test(bench.run.bad_budget_zero RC 1 REGEX "--budgets: '0' is not a percentage"
             ARGS bench run -m ${_tiny} --budgets 100,0)
moe_cli_test(bench.run.bad_budget_over RC 1 REGEX "--budgets: '150' is not a percentage: expected .* in 1..100"
             ARGS bench run -m ${_tiny} --budgets 150)
moe_cli_test(bench.run.bad_budget_text RC 1 REGEX "--budgets: '50%' is not a percentage"
             ARGS bench run -m ${_tiny} --budgets 50%)
moe_cli_test(bench.run.bad_llama_mode RC 2 REGEX "--llama-cpp" ARGS bench run -m ${_tiny} --llama-cpp maybe)
moe_cli_test(bench.run.bad_backend RC 2 REGEX "--backend" ARGS bench run -m ${_tiny} --backend tpu)
moe_cli_test(bench.run.bad_prompt_tokens RC 2 REGEX "--prompt-tokens" ARGS bench run -m ${_tiny} --prompt-tokens 0)
moe_cli_test(bench.run.bad_unknown_flag RC 2 REGEX "--frobnicate" ARGS bench run -m ${_tiny} --frobnicate)
moe_cli_test(bench.run.no_model RC 2 REGEX "model is required" ARGS bench run)
moe_cli_test(bench.run.missing_model RC 1 REGEX "no-such-model\\.gguf" ARGS bench run -m ${_fx}/no-such-model.gguf)
moe_cli_test(bench.run.bad_policy RC 1 REGEX "unknown eviction policy 'mru'"
             ARGS bench run -m ${_tiny} --budgets 50 ${_small} --policy mru --llama-cpp off)
moe_cli_test(bench.usage RC 0 REGEX "moe bench run -m MODEL \\[--budgets 100,50,25\\]" ARGS bench --help)
