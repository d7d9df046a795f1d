#!/usr/bin/env bash
# `moe run` keeps its results whatever ends it: a signal (SIGINT, SIGTERM) sent to a real child process, a closed
# pipe, a full stdout; output paths are checked before any work (never the model, a directory, a device, or each
# other) and never leave half a file; the trained context bounds the default context and a --ctx larger than
# the run needs is said with its bytes; exit statuses follow the README (2 bad flags, 3 budget too small).
# Usage: run_results_check.sh MOE FIXTURES_DIR SCRATCH_DIR
set -u
moe=$1
fx=$2
dir=$3
rm -rf "$dir"
mkdir -p "$dir"
model=$fx/ref/mixtral-f32.gguf  # trained context 256 positions, 2 MoE layers x 4 experts, no tokenizer
failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}
json() {  # json FILE EXPR: prints python's value of EXPR with j = the parsed file
    python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"
}
no_temp_files() {
    if ls "$dir" | grep -q '\.tmp-'; then fail "$1: a temporary file was left behind: $(ls "$dir")"; fi
}

# A signal stops generation between two steps: summary, trace and statistics are kept; status 128 + signal.
for sig in INT TERM; do
    out=$dir/sig-$sig
    "$moe" run -m "$model" --prompt-ids 1,2,3 -n 1000000 --ctx 100000 --trace "$out.trace" \
        --stats-json "$out.json" >"$out.stdout" 2>"$out.stderr" &
    pid=$!
    for _ in $(seq 100); do
        [ -s "$out.stdout" ] && break
        sleep 0.1
    done
    sleep 0.3
    kill -$sig $pid
    wait $pid
    rc=$?
    want=$([ $sig = INT ] && echo 130 || echo 143)
    [ $rc = $want ] || fail "SIG$sig: exit status $rc, expected $want"
    grep -q -- "--- moe run" "$out.stderr" || fail "SIG$sig: no summary on stderr"
    grep -q "stopped    interrupted" "$out.stderr" || fail "SIG$sig: the summary does not say it was interrupted"
    [ -f "$out.json" ] || fail "SIG$sig: no --stats-json"
    [ -f "$out.json" ] && [ "$(json "$out.json" "j['interrupted']")" = True ] || fail "SIG$sig: stats without interrupted"
    [ -f "$out.json" ] && [ "$(json "$out.json" "len(j['tokens']) > 0")" = True ] || fail "SIG$sig: no tokens kept"
    rows=$(($(wc -l <"$out.trace") - 2))
    [ $rows -gt 0 ] || fail "SIG$sig: the trace lost its rows"
    tokens=$(wc -w <"$out.stdout")
    [ $tokens -gt 0 ] || fail "SIG$sig: no tokens on stdout"
done
no_temp_files "signals"

# A closed pipe: the run stops, writes its statistics and exits 141 (128 + SIGPIPE), not silently.
"$moe" run -m "$model" --prompt-ids 1,2,3 -n 200 --stats-json "$dir/pipe.json" 2>"$dir/pipe.stderr" | head -c 20 >/dev/null
rc=${PIPESTATUS[0]}
[ $rc = 141 ] || fail "closed pipe: exit status $rc, expected 141"
grep -q "Broken pipe" "$dir/pipe.stderr" || fail "closed pipe: the reason is not printed"
[ -f "$dir/pipe.json" ] && [ "$(json "$dir/pipe.json" "j['interrupted'] and 'Broken pipe' in j['error']")" = True ] ||
    fail "closed pipe: statistics missing or without the reason"

# A full stdout is an error, not silently dropped tokens.
"$moe" run -m "$model" --prompt-ids 1,2,3 -n 4 >/dev/full 2>"$dir/full.stderr"
rc=$?
[ $rc = 1 ] || fail "stdout to /dev/full: exit status $rc, expected 1"
grep -q "No space left on device" "$dir/full.stderr" || fail "stdout to /dev/full: the reason is not printed"

# Output paths are refused before any work, with status 2, and the model is never touched.
sum_before=$(md5sum <"$model")
for bad in "--trace $model" "--stats-json $model" "--stats-json $dir" "--stats-json /dev/full" \
    "--trace $dir/same.out --stats-json $dir/same.out" "--trace $dir/./same.out --stats-json $dir/same.out"; do
    # shellcheck disable=SC2086
    "$moe" run -m "$model" --prompt-ids 1,2,3 -n 2 $bad >/dev/null 2>"$dir/paths.stderr"
    rc=$?
    [ $rc = 2 ] || fail "output '$bad': exit status $rc, expected 2 ($(cat "$dir/paths.stderr"))"
    grep -q "^moe run: error: --" "$dir/paths.stderr" || fail "output '$bad': no message naming the flag"
    grep -q -- "--- moe run" "$dir/paths.stderr" && fail "output '$bad': the run went ahead"
done
[ "$(md5sum <"$model")" = "$sum_before" ] || fail "the model file changed"
[ -e "$dir/same.out" ] && fail "a refused output was created"
no_temp_files "refused outputs"

# The context: the trained length bounds the default; a huge --ctx allocates only what the run needs.
"$moe" run -m "$model" --prompt-ids 1,2,3 -n 1000000 --stats-json "$dir/ctx.json" >/dev/null 2>"$dir/ctx.stderr"
rc=$?
[ $rc = 0 ] || fail "-n 1000000: exit status $rc"
grep -q "trained for 256 positions" "$dir/ctx.stderr" || fail "-n 1000000: the trained context is not mentioned"
[ "$(json "$dir/ctx.json" "len(j['tokens']) <= 253 and j['memory']['n_ctx'] == 256")" = True ] ||
    fail "-n 1000000: generated past the trained context"
"$moe" run -m "$model" --prompt-ids 1,2,3 -n 2 --ctx 100000 --stats-json "$dir/bigctx.json" >/dev/null \
    2>"$dir/bigctx.stderr"
rc=$?
[ $rc = 0 ] || fail "--ctx 100000: exit status $rc"
grep -q "ctx 100000 reserves a KV cache of .* for 100000 positions; this run uses at most 5" "$dir/bigctx.stderr" ||
    fail "--ctx 100000 -n 2: the KV cache it reserves is not said"
[ "$(json "$dir/bigctx.json" "j['memory']['n_ctx'] == 100000")" = True ] || fail "--ctx 100000: not the context asked for"

# Exit statuses: a budget too small is 3, a bad flag value 2.
"$moe" run -m "$model" --prompt-ids 1,2,3 --vram-budget 100K >/dev/null 2>&1
rc=$?
[ $rc = 3 ] || fail "--vram-budget 100K: exit status $rc, expected 3"
for bad in "--policy mru" "--vram-budget 0" "--vram-budget 10Q" "--prefetch spec --prefetch-k 9" "--ctx 2"; do
    # shellcheck disable=SC2086
    "$moe" run -m "$model" --prompt-ids 1,2,3 $bad >/dev/null 2>&1
    rc=$?
    [ $rc = 2 ] || fail "'$bad': exit status $rc, expected 2"
done

MOE_CPU_ISA=foo "$moe" run -m "$model" --prompt-ids 1,2,3 --backend cpu >/dev/null 2>"$dir/isa.stderr"
rc=$?
[ $rc = 2 ] || fail "MOE_CPU_ISA=foo: exit status $rc, expected 2"
grep -q "MOE_CPU_ISA=foo" "$dir/isa.stderr" || fail "MOE_CPU_ISA=foo: not named in the message"

if [ $failures -gt 0 ]; then
    echo "$failures check(s) failed" >&2
    exit 1
fi
echo "run results kept: all checks passed"
