#!/usr/bin/env python3
"""The llama.cpp side of `moe bench run`: prompt-processing and decode tokens/s of llama.cpp, through
llama-cpp-python, on the same GGUF with the same threads and token ids moe used. Prints ONE JSON object on the last
line of stdout and never a traceback, so moe can always tell what happened:

  {"status": "ok", "version": ..., "prompt_tokens": P, "gen_tokens": G, "prompt_s": ..., "decode_s": ...,
   "prompt_tokens_per_s": ..., "decode_tokens_per_s": ..., "load_s": ..., "threads": T, "backend": "cpu"}
  {"status": "not installed", "message": "pip install llama-cpp-python"}
  {"status": "failed", "message": "..."}

Measured like moe's side: the prompt evaluated in one call (llama.cpp batches it), then G tokens decoded one at a
time, each the argmax of the previous logits; only the evaluation calls are timed. One short warm-up evaluation
first, so page faults of the mmap'd weights are not counted as compute (moe loads its resident weights before
timing too). Every layer stays on the CPU (n_gpu_layers=0): llama.cpp holds every expert in RAM.

Usage: python3 scripts/llamacpp_bench.py --model M.gguf --threads N --prompt-ids 1,2,3 --gen-tokens 32
"""
import argparse
import json
import sys
import time


def answer(obj, code=0):
    print(json.dumps(obj), flush=True)
    sys.exit(code)


def last_logits(llm, n_vocab):
    """The logits of the last evaluated token. Llama.eval keeps them in llm.scores only with logits_all=True (which
    would make llama.cpp compute the logits of every prompt position), so read them from the context."""
    import llama_cpp
    import numpy as np

    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(n_vocab,))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--prompt-ids", required=True, help="comma-separated token ids")
    ap.add_argument("--gen-tokens", type=int, required=True)
    args = ap.parse_args()
    try:
        prompt = [int(x) for x in args.prompt_ids.split(",") if x != ""]
    except ValueError:
        answer({"status": "failed", "message": f"--prompt-ids: expected integers, found {args.prompt_ids!r}"}, 2)
    if not prompt or args.gen_tokens < 1 or args.threads < 1:
        answer({"status": "failed", "message": "expected a prompt, --gen-tokens >= 1 and --threads >= 1"}, 2)

    try:
        import llama_cpp
    except ImportError:
        answer({"status": "not installed", "message": "pip install llama-cpp-python"})
    except Exception as e:  # a broken build (missing shared library, ...)
        answer({"status": "failed", "message": f"import llama_cpp: {type(e).__name__}: {e}"}, 1)

    try:
        import numpy as np

        t0 = time.perf_counter()
        llm = llama_cpp.Llama(model_path=args.model, n_ctx=len(prompt) + args.gen_tokens + 8,
                              n_batch=max(len(prompt), 8), n_threads=args.threads, n_threads_batch=args.threads,
                              n_gpu_layers=0, seed=0, verbose=False)
        load_s = time.perf_counter() - t0
        n_vocab = llm.n_vocab()
        if max(prompt) >= n_vocab:
            answer({"status": "failed", "message": f"token id {max(prompt)} outside llama.cpp's vocab of {n_vocab}"}, 1)

        llm.eval(prompt[: min(8, len(prompt))])  # warm-up
        llm.reset()

        t0 = time.perf_counter()
        llm.eval(prompt)
        prompt_s = time.perf_counter() - t0
        decode_s = 0.0
        for _ in range(args.gen_tokens):
            nxt = int(np.argmax(last_logits(llm, n_vocab)))
            t0 = time.perf_counter()
            llm.eval([nxt])
            decode_s += time.perf_counter() - t0
    except SystemExit:
        raise
    except Exception as e:
        answer({"status": "failed", "message": f"llama.cpp: {type(e).__name__}: {e}"}, 1)

    answer({
        "status": "ok",
        "version": getattr(llama_cpp, "__version__", "?"),
        "backend": "cpu",
        "threads": args.threads,
        "prompt_tokens": len(prompt),
        "gen_tokens": args.gen_tokens,
        "load_s": load_s,
        "prompt_s": prompt_s,
        "decode_s": decode_s,
        "prompt_tokens_per_s": len(prompt) / prompt_s if prompt_s > 0 else 0.0,
        "decode_tokens_per_s": args.gen_tokens / decode_s if decode_s > 0 else 0.0,
    })


if __name__ == "__main__":
    main()
