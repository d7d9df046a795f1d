#!/usr/bin/env python3
# Stands in for a llama.cpp side that measured other token counts than it was asked for.
print('{"status": "ok", "prompt_tokens": 1, "gen_tokens": 1, "prompt_tokens_per_s": 1.0, "decode_tokens_per_s": 1.0}')
