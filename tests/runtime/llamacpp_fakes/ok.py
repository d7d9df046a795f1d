#!/usr/bin/env python3
# Stands in for scripts/llamacpp_bench.py in tests of `moe bench run`: answers "ok" with fixed figures for the token
# counts it was asked for, after a log line on stdout (llama.cpp may print there too).
import json
import sys

args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
print("llama_model_loader: a log line that is not JSON")
print(json.dumps({"status": "ok", "version": "fake", "backend": "cpu", "threads": int(args["--threads"]),
                  "prompt_tokens": len(args["--prompt-ids"].split(",")), "gen_tokens": int(args["--gen-tokens"]),
                  "prompt_s": 0.5, "decode_s": 0.25, "prompt_tokens_per_s": 123.5, "decode_tokens_per_s": 45.6}))
