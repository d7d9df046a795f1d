#!/usr/bin/env python3
"""Regenerates tests/fixtures/llamacpp/: tiny random-weight quantized MoE models (Mixtral `llama` and
`qwen3moe`) whose tensors use every quantized type the CPU fast paths cover (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K), and
llama.cpp's own answer for them, computed through llama-cpp-python: the logits at every position of a fixed
prompt followed by the greedy continuation, and the 32 greedy tokens.

The reference is llama.cpp (the runtime is not its own oracle). tests/runtime/llamacpp_ref_test.cpp checks that
our engine produces the same 32 greedy tokens and logits within a stated tolerance.

Why the models look the way they do:
  - K-quant rows must be multiples of 256 elements, so the hidden size is 256; the expert width is 64, so the
    down projections (rows of 64) use the 32-element types Q8_0 / Q4_0, and gate/up use the K-quants;
  - experts are what the engine multiplies in their stored type (resident weights are dequantized to F32 at
    load), so the expert tensors of the two layers and two models between them use all five types; the
    attention, output and embedding matrices use them too (exercising dequantization);
  - gguf-py has no K-quant quantizer, so this script has its own (simple min/max scales, not llama.cpp's
    search): any valid encoding serves, since both engines decode the same bits. Each encoding is checked by
    decoding it with gguf-py's dequantize;
  - llama.cpp loads a vocabulary with any model: a SentencePiece-style one with the 256 byte tokens is written;
  - llama.cpp is run with F32 K/V caches, one thread, logits for every position. It quantizes activations to
    8 bits for quantized matrix products, so its logits differ from an exact float computation by ~1e-2;
    prompts are chosen (among seeded random candidates) so that every greedy step has a clear winner: the
    smallest gap between the best and second-best logit, relative to max |logit|, is recorded as min_rel_gap.
    A prompt is kept only if llama.cpp on the float twin (below), fed the same tokens, picks the same 32 and its
    logits stay within MAX_QUANT_ERR of the quantized run at every position (no greedy step or routing decision
    left to activation rounding); among those, the one with the largest min_rel_gap.

Outputs (deterministic apart from llama.cpp's own arithmetic, which is deterministic on one thread):
  <name>.gguf             the quantized model
  <name>.llamacpp.f32     float32 little-endian logits (n_positions, n_vocab): prompt + 31 generated tokens
  <name>.llamacpp-float.f32  the same for llama.cpp on the float twin (every quantized matrix stored as F32
                          holding exactly its decoded values; the twin itself is not kept), fed the same tokens
  <name>.llamacpp.json    {"gguf", "arch", "n_vocab", "prompt", "tokens" (32 greedy), "n_positions",
                           "min_rel_gap" (quantized run), "float_min_rel_gap", "quant_vs_float_rel_err",
                           "tensor_types", "llama_cpp_python"}

Usage: scripts/make_llamacpp_reference.py [--out DIR]. Requires numpy, gguf, llama-cpp-python
(CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install llama-cpp-python builds llama.cpp from source).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize, quantize

N_GEN = 32
N_VOCAB = 320  # 3 specials + 256 byte tokens + word pieces
PROMPT_LEN = 8
N_CANDIDATE_PROMPTS = 200
MAX_QUANT_ERR = 0.06  # llama.cpp quantized vs its float twin, per position (see the module doc)


# -------------------------------------------------------------------------------------------------------------
# Quantizers for the K-quants (gguf-py only dequantizes them). Block layouts: docs/model-formats.md §2.2.

def f16(a):
    return np.asarray(a, dtype=np.float32).astype(np.float16)


def _safe_div(a, b):
    return np.divide(a, b, out=np.zeros_like(a), where=b != 0)


def _scale_min_blocks(x: np.ndarray, qmax: int):
    """x (nb, 8, 32) -> d, dmin (nb,) as f16, sc, m (nb, 8) 6-bit, q (nb, 8, 32) in 0..qmax, for value
    d*sc*q - dmin*m (Q4_K / Q5_K)."""
    gmin = np.minimum(x.min(axis=2), 0.0)
    gmax = x.max(axis=2)
    scale = (gmax - gmin) / qmax
    mins = -gmin
    d = f16(scale.max(axis=1) / 63).astype(np.float32)
    dmin = f16(mins.max(axis=1) / 63).astype(np.float32)
    sc = np.clip(np.rint(_safe_div(scale, d[:, None])), 0, 63).astype(np.uint8)
    m = np.clip(np.rint(_safe_div(mins, dmin[:, None])), 0, 63).astype(np.uint8)
    D = (d[:, None] * sc.astype(np.float32)).astype(np.float32)  # as the decoder: d * float(sc)
    M = (dmin[:, None] * m.astype(np.float32)).astype(np.float32)
    q = np.clip(np.rint(_safe_div(x + M[:, :, None], np.broadcast_to(D[:, :, None], x.shape).copy())), 0, qmax)
    return f16(d), f16(dmin), sc, m, q.astype(np.uint8)


def _pack_scales_k4(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Inverse of get_scale_min_k4: (nb, 8) 6-bit scales and mins -> (nb, 12) bytes."""
    out = np.zeros((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 0xF) | ((m[:, 4:8] & 0xF) << 4)
    return out


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    nb = x.size // 256
    d, dmin, sc, m, q = _scale_min_blocks(x.reshape(nb, 8, 32), 15)
    q = q.reshape(nb, 4, 2, 32)  # chunk c: groups 2c (low nibbles) and 2c+1 (high nibbles)
    qs = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(nb, 128)
    return np.concatenate([d.view(np.uint8).reshape(nb, 2), dmin.view(np.uint8).reshape(nb, 2),
                           _pack_scales_k4(sc, m), qs], axis=1)


def quantize_q5_k(x: np.ndarray) -> np.ndarray:
    nb = x.size // 256
    d, dmin, sc, m, q = _scale_min_blocks(x.reshape(nb, 8, 32), 31)
    q = q.reshape(nb, 4, 2, 32)
    qs = ((q[:, :, 0, :] & 0xF) | ((q[:, :, 1, :] & 0xF) << 4)).reshape(nb, 128)
    qh = np.zeros((nb, 32), dtype=np.uint8)
    for c in range(4):
        qh |= ((q[:, c, 0, :] >> 4) << (2 * c)).astype(np.uint8)
        qh |= ((q[:, c, 1, :] >> 4) << (2 * c + 1)).astype(np.uint8)
    return np.concatenate([d.view(np.uint8).reshape(nb, 2), dmin.view(np.uint8).reshape(nb, 2),
                           _pack_scales_k4(sc, m), qh, qs], axis=1)


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    nb = x.size // 256
    g = x.reshape(nb, 16, 16)  # group j = elements 16j..16j+15, scale index j
    scale = np.abs(g).max(axis=2) / 31.5
    d = f16(scale.max(axis=1) / 127).astype(np.float32)
    sc = np.clip(np.rint(_safe_div(scale, d[:, None])), -128, 127).astype(np.int8)
    D = (d[:, None] * sc.astype(np.float32)).astype(np.float32)
    q = (np.clip(np.rint(_safe_div(g, np.broadcast_to(D[:, :, None], g.shape).copy())), -32, 31) + 32)
    q = q.astype(np.uint8).reshape(nb, 2, 4, 32)  # element 128h + 32k + l
    ql = np.zeros((nb, 2, 64), dtype=np.uint8)
    ql[:, :, 0:32] = (q[:, :, 0, :] & 0xF) | ((q[:, :, 2, :] & 0xF) << 4)
    ql[:, :, 32:64] = (q[:, :, 1, :] & 0xF) | ((q[:, :, 3, :] & 0xF) << 4)
    qh = np.zeros((nb, 2, 32), dtype=np.uint8)
    for k in range(4):
        qh |= ((q[:, :, k, :] >> 4) << (2 * k)).astype(np.uint8)
    return np.concatenate([ql.reshape(nb, 128), qh.reshape(nb, 64), sc.view(np.uint8),
                           f16(d).view(np.uint8).reshape(nb, 2)], axis=1)


K_QUANTIZERS = {Q.Q4_K: quantize_q4_k, Q.Q5_K: quantize_q5_k, Q.Q6_K: quantize_q6_k}


def encode(a: np.ndarray, qtype) -> np.ndarray:
    """a (..., ne0) float32 -> bytes (..., row_bytes) of qtype, checked by decoding with gguf-py."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if qtype in K_QUANTIZERS:
        raw = K_QUANTIZERS[qtype](a).reshape(*a.shape[:-1], -1)
    else:
        raw = quantize(a, qtype)
    back = dequantize(raw, qtype).reshape(a.shape)
    err = np.abs(back - a).max() / np.abs(a).max()
    assert err < {Q.Q8_0: 0.01, Q.Q6_K: 0.04, Q.Q5_K: 0.05, Q.Q4_K: 0.1, Q.Q4_0: 0.15}[qtype], (qtype, err)
    return raw


# -------------------------------------------------------------------------------------------------------------
# Models

def spm_vocab(n_vocab: int):
    """<unk>, <s>, </s>, the 256 byte tokens (llama.cpp looks up <0x0A> for the newline), then word pieces."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    while len(tokens) < n_vocab:
        tokens.append(f"\u2581w{len(tokens)}")
        types.append(1)
    scores = [0.0] * 259 + [-float(i) for i in range(n_vocab - 259)]
    return tokens, scores, types


def add_spm_tokenizer(w: gguf.GGUFWriter, n_vocab: int, add_bos: bool):
    """The tokenizer metadata of spm_vocab(n_vocab): <unk> 0, <s> 1, </s> 2."""
    tokens, scores, ttypes = spm_vocab(n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(ttypes)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(add_bos)


# Tensor types per model: (name pattern -> type). Expert tensors per layer cover every type between the models.
MODELS = {
    "mixtral-kq": dict(arch="llama", seed=5, types={
        "token_embd": Q.Q4_K, "output": Q.Q6_K,
        "attn_q": Q.Q4_K, "attn_k": Q.Q5_K, "attn_v": Q.Q6_K, "attn_output": Q.Q8_0,
        "blk.0.ffn_gate_exps": Q.Q4_K, "blk.0.ffn_up_exps": Q.Q5_K, "blk.0.ffn_down_exps": Q.Q8_0,
        "blk.1.ffn_gate_exps": Q.Q6_K, "blk.1.ffn_up_exps": Q.Q4_0, "blk.1.ffn_down_exps": Q.Q4_0}),
    "qwen3moe-kq": dict(arch="qwen3moe", seed=6, types={
        "token_embd": Q.Q6_K, "output": Q.Q8_0,
        "attn_q": Q.Q6_K, "attn_k": Q.Q4_K, "attn_v": Q.Q8_0, "attn_output": Q.Q5_K,
        "blk.0.ffn_gate_exps": Q.Q5_K, "blk.0.ffn_up_exps": Q.Q6_K, "blk.0.ffn_down_exps": Q.Q4_0,
        "blk.1.ffn_gate_exps": Q.Q8_0, "blk.1.ffn_up_exps": Q.Q4_K, "blk.1.ffn_down_exps": Q.Q8_0}),
}
D, N_LAYER, N_HEAD, N_HEAD_KV, HEAD_DIM, N_EXPERT, N_EXPERT_USED, F_EXPERT = 256, 2, 4, 2, 64, 4, 2, 64


def type_for(name: str, types: dict):
    stem = name.rsplit(".", 1)[0]  # drop ".weight"
    if stem in types:
        return types[stem]
    return types.get(stem.split(".")[-1])


def write_model(path: Path, arch: str, seed: int, types: dict, float_twin: bool = False) -> dict:
    """float_twin: every quantized matrix written as F32 holding exactly its decoded values (same weights,
    so llama.cpp computes them without quantizing the activations)."""
    rng = np.random.default_rng(seed)
    rand = lambda *shape, s: (rng.standard_normal(shape) * s).astype(np.float32)
    norm = lambda n: (1.0 + rng.standard_normal(n) * 0.1).astype(np.float32)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(path.stem)
    w.add_block_count(N_LAYER)
    w.add_context_length(256)
    w.add_embedding_length(D)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_expert_count(N_EXPERT)
    w.add_expert_used_count(N_EXPERT_USED)
    if arch == "llama":
        w.add_feed_forward_length(F_EXPERT)
    else:
        w.add_feed_forward_length(4 * D)
        w.add_expert_feed_forward_length(F_EXPERT)
        w.add_key_length(HEAD_DIM)
        w.add_value_length(HEAD_DIM)
    add_spm_tokenizer(w, N_VOCAB, add_bos=False)
    used = {}

    def t(name, a):
        qt = type_for(name, types) if a.ndim >= 2 else None
        if qt is None:
            w.add_tensor(name, np.ascontiguousarray(a, dtype=np.float32))
            used[name] = "F32"
        else:
            raw = encode(a, qt)
            if float_twin:
                w.add_tensor(name, dequantize(raw, qt).reshape(a.shape).astype(np.float32))
            else:
                w.add_tensor(name, raw, raw_dtype=qt)
            used[name] = qt.name

    # Scales keep the residual stream O(1) and spread the logits (clear greedy winners).
    t("token_embd.weight", rand(N_VOCAB, D, s=1.0))
    t("output_norm.weight", norm(D))
    t("output.weight", rand(N_VOCAB, D, s=0.25))
    for il in range(N_LAYER):
        b = f"blk.{il}."
        t(b + "attn_norm.weight", norm(D))
        t(b + "attn_q.weight", rand(N_HEAD * HEAD_DIM, D, s=0.08))
        t(b + "attn_k.weight", rand(N_HEAD_KV * HEAD_DIM, D, s=0.08))
        t(b + "attn_v.weight", rand(N_HEAD_KV * HEAD_DIM, D, s=0.08))
        t(b + "attn_output.weight", rand(D, N_HEAD * HEAD_DIM, s=0.06))
        if arch == "qwen3moe":
            t(b + "attn_q_norm.weight", norm(HEAD_DIM))
            t(b + "attn_k_norm.weight", norm(HEAD_DIM))
        t(b + "ffn_norm.weight", norm(D))
        t(b + "ffn_gate_inp.weight", rand(N_EXPERT, D, s=1.0))  # decisive routing
        t(b + "ffn_gate_exps.weight", rand(N_EXPERT, F_EXPERT, D, s=0.1))
        t(b + "ffn_up_exps.weight", rand(N_EXPERT, F_EXPERT, D, s=0.1))
        t(b + "ffn_down_exps.weight", rand(N_EXPERT, D, F_EXPERT, s=0.15))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return used


def run_llama_cpp(path: Path, prompt: list[int], forced: list[int] | None = None):
    """llama.cpp's logits for prompt + the first N_GEN - 1 greedy tokens, and the N_GEN greedy tokens. With
    `forced`, those tokens are fed instead of llama.cpp's own choices (teacher forcing)."""
    from llama_cpp import Llama
    llm = Llama(model_path=str(path), n_ctx=128, n_batch=128, n_ubatch=128, n_threads=1, n_threads_batch=1,
                logits_all=True, type_k=0, type_v=0, use_mmap=False, verbose=False)  # ggml type 0 = F32 K/V
    llm.reset()
    llm.eval(prompt)
    tokens = []
    for step in range(N_GEN):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        tokens.append(tok)
        if step + 1 < N_GEN:
            llm.eval([forced[step] if forced else tok])
    logits = np.array(llm.scores[:llm.n_tokens], dtype=np.float32)
    llm.close()
    return logits, tokens


def min_rel_gap(logits: np.ndarray, first: int) -> float:
    rows = logits[first:]
    top2 = np.sort(rows, axis=1)[:, -2:]
    return float(((top2[:, 1] - top2[:, 0]) / np.abs(rows).max(axis=1)).min())


def rel_errors(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.abs(a - ref).max(axis=1) / np.abs(ref).max(axis=1)


def main():
    import llama_cpp
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests/fixtures/llamacpp"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in MODELS.items():
            path = out / f"{name}.gguf"
            used = write_model(path, spec["arch"], spec["seed"], spec["types"])
            twin = Path(tmp) / f"{name}-f32.gguf"
            write_model(twin, spec["arch"], spec["seed"], spec["types"], float_twin=True)
            rng = np.random.default_rng(1000 + spec["seed"])
            best = None
            for _ in range(N_CANDIDATE_PROMPTS):
                prompt = [int(v) for v in rng.integers(3, N_VOCAB, PROMPT_LEN)]
                logits, tokens = run_llama_cpp(path, prompt)
                twin_logits, twin_tokens = run_llama_cpp(twin, prompt, forced=tokens)
                quant_err = float(rel_errors(logits, twin_logits).max())
                gap = min_rel_gap(logits, PROMPT_LEN - 1)
                # Usable: the float twin, fed the same tokens, picks the same ones (no near-tie that activation
                # rounding decides) and no position jumps (no routing decided by activation rounding).
                if twin_tokens != tokens or quant_err > MAX_QUANT_ERR:
                    continue
                if best is None or gap > best[0]:
                    best = (gap, prompt, logits, tokens, twin_logits, quant_err)
            assert best is not None, f"{name}: no candidate prompt without near-ties; change the seed"
            gap, prompt, logits, tokens, twin_logits, quant_err = best
            (out / f"{name}.llamacpp.f32").write_bytes(np.ascontiguousarray(logits, dtype="<f4").tobytes())
            (out / f"{name}.llamacpp-float.f32").write_bytes(np.ascontiguousarray(twin_logits, dtype="<f4").tobytes())
            meta = dict(gguf=path.name, arch=spec["arch"], n_vocab=N_VOCAB, prompt=prompt, tokens=tokens,
                        n_positions=int(logits.shape[0]), min_rel_gap=gap,
                        float_min_rel_gap=min_rel_gap(twin_logits, PROMPT_LEN - 1), quant_vs_float_rel_err=quant_err,
                        tensor_types=used, llama_cpp_python=llama_cpp.__version__)
            (out / f"{name}.llamacpp.json").write_text(json.dumps(meta, indent=1) + "\n")
            print(f"{name}: {path.stat().st_size} B, prompt {prompt}, tokens {tokens[:8]}..., min rel gap {gap:.3g}, "
                  f"llama.cpp quantized vs float {quant_err:.3g}")


if __name__ == "__main__":
    main()
