#!/usr/bin/env python3
"""Writes a random-weight Qwen3-MoE-shaped GGUF big enough for `moe bench run` to measure something (hundreds of
MB, dozens of experts per layer), which the kilobyte test fixtures cannot. Not committed: generated on demand.

The weights are random, so the text is gibberish and routing has none of a trained model's locality: hit rates
measured on it are a lower bound for a trained model of the same shape. What it is good for is tokens/s of
moe-runtime against llama.cpp on the same file, threads and token counts (`moe bench run` runs both).

Shape (defaults): 8 layers, width 1024, 16 query / 4 KV heads of 64, 32 experts per layer (top-4) of width 512,
vocabulary 2048 (SentencePiece-style with the 256 byte tokens), every matrix Q8_0 except norms and routers.
That is about 430 MB, of which ~95 % routed experts.

Usage: scripts/make_bench_model.py [--out /tmp/moe-bench-qwen3moe-q8_0.gguf] [--layers 8] [--experts 32] ...
Requires numpy and gguf (pip install -r scripts/requirements.txt).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_llamacpp_reference import add_spm_tokenizer  # noqa: E402  (a vocabulary llama.cpp accepts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="/tmp/moe-bench-qwen3moe-q8_0.gguf")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--top-k", type=int, default=4)
    ap.add_argument("--expert-width", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    rng = np.random.default_rng(a.seed)
    rand = lambda *shape, s: (rng.standard_normal(shape, dtype=np.float32) * s)
    norm = lambda n: (1.0 + rng.standard_normal(n, dtype=np.float32) * 0.1)
    d, hd = a.width, a.head_dim
    out = Path(a.out)
    w = gguf.GGUFWriter(str(out), "qwen3moe")
    w.add_name(out.stem)
    w.add_block_count(a.layers)
    w.add_context_length(4096)
    w.add_embedding_length(d)
    w.add_feed_forward_length(4 * d)
    w.add_expert_feed_forward_length(a.expert_width)
    w.add_head_count(a.heads)
    w.add_head_count_kv(a.kv_heads)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(1000000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_expert_count(a.experts)
    w.add_expert_used_count(a.top_k)
    add_spm_tokenizer(w, a.vocab, add_bos=True)

    def q8(name, arr):
        w.add_tensor(name, quantize(np.ascontiguousarray(arr, dtype=np.float32), Q.Q8_0), raw_dtype=Q.Q8_0)

    def f32(name, arr):
        w.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32))

    E, f = a.experts, a.expert_width
    q8("token_embd.weight", rand(a.vocab, d, s=1.0))
    f32("output_norm.weight", norm(d))
    q8("output.weight", rand(a.vocab, d, s=0.05))
    for il in range(a.layers):
        b = f"blk.{il}."
        f32(b + "attn_norm.weight", norm(d))
        q8(b + "attn_q.weight", rand(a.heads * hd, d, s=0.03))
        q8(b + "attn_k.weight", rand(a.kv_heads * hd, d, s=0.03))
        q8(b + "attn_v.weight", rand(a.kv_heads * hd, d, s=0.03))
        q8(b + "attn_output.weight", rand(d, a.heads * hd, s=0.03))
        f32(b + "attn_q_norm.weight", norm(hd))
        f32(b + "attn_k_norm.weight", norm(hd))
        f32(b + "ffn_norm.weight", norm(d))
        f32(b + "ffn_gate_inp.weight", rand(E, d, s=0.1))
        q8(b + "ffn_gate_exps.weight", rand(E, f, d, s=0.03))
        q8(b + "ffn_up_exps.weight", rand(E, f, d, s=0.03))
        q8(b + "ffn_down_exps.weight", rand(E, d, f, s=0.04))
        print(f"layer {il + 1}/{a.layers}", file=sys.stderr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
