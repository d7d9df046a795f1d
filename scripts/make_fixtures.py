#!/usr/bin/env python3
"""Regenerates tests/fixtures/: tiny random-weight MoE models in GGUF and Hugging Face safetensors form, with the
exact tensor names, shapes and metadata keys of the real converters (docs/model-formats.md §3, §5),
plus an `<file>.expected.json` beside each model.

The expected files are computed by READING THE WRITTEN FILES BACK with gguf.GGUFReader and with a from-scratch
safetensors header parse (cross-checked against safetensors.safe_open), never from what this script meant to
write, so they are an independent reference for the C++ readers and for describe_model().

Deterministic: a fixed seed, and no timestamps in any file. Usage: scripts/make_fixtures.py [--out DIR]
Requires: numpy, gguf, safetensors (scripts/requirements.txt).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import struct
import zlib
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize
import safetensors
from safetensors import TensorSpec

SEED = 20241126
RNG = np.random.default_rng(SEED)

# ---------------------------------------------------------------------------------------------------------------
# Random weights


def rand(ne, scale=0.05):
    """A float32 array for a tensor of ggml shape `ne` (ne[0] contiguous), i.e. numpy shape reversed(ne)."""
    return (RNG.standard_normal(tuple(reversed(ne))) * scale).astype(np.float32)


def norm_weight(n):
    return (1.0 + RNG.standard_normal(n) * 0.05).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# GGUF writing

def is_routed_expert(name: str) -> bool:
    return bool(re.fullmatch(r"blk\.\d+\.ffn_(gate|up|down|gate_up)_exps\.(weight|bias)", name)
                or re.fullmatch(r"blk\.\d+\.ffn_(gate|up|down)\.\d+\.weight", name))


def write_gguf(path: Path, arch: str, kv: list, tensors: list, expert_type=Q.F32, other_type=Q.F32,
               split_max_tensors=0):
    """kv: [(key, gguf.GGUFValueType, value[, sub_type])]; tensors: [(name, float32 array)].
    Routed-expert weights (3-D *_exps.weight and legacy per-expert 2-D tensors) get `expert_type`; other 2-D
    weights get `other_type`; 1-D tensors, biases and the router stay F32 (as the real converter does)."""
    w = gguf.GGUFWriter(str(path), arch, split_max_tensors=split_max_tensors)
    for item in kv:
        key, vtype, value = item[0], item[1], item[2]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, value, vtype, sub_type=item[3])
        else:
            w.add_key_value(key, value, vtype)
    for name, arr in tensors:
        if name.endswith(".bias") or arr.ndim == 1 or ".ffn_gate_inp" in name:
            qt = Q.F32
        elif is_routed_expert(name):
            qt = expert_type
        else:
            qt = other_type
        if qt == Q.F32:
            w.add_tensor(name, arr)
        elif qt == Q.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, quantize(arr, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


U32, I32, U16, F32V, BOOL, STR, ARR = (gguf.GGUFValueType.UINT32, gguf.GGUFValueType.INT32, gguf.GGUFValueType.UINT16,
                                        gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.BOOL,
                                        gguf.GGUFValueType.STRING, gguf.GGUFValueType.ARRAY)


def general_kv(name, file_type):
    return [("general.name", STR, name), ("general.file_type", U32, file_type),
            ("general.quantization_version", U32, 2)]


def spm_tokenizer(n_vocab):
    """A small SentencePiece-style vocabulary: <unk>, <s>, </s>, byte tokens, then word pieces."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [2, 3, 3]
    for b in range(32, 32 + 61):
        tokens.append(f"<0x{b:02X}>")
        types.append(6)
    words = ["\u2581the", "\u2581a", "\u2581of", "\u2581and", "\u2581to", "\u2581in", "\u2581is", "\u2581it", "er",
             "in", "on", "an", "re", "\u2581t", "\u2581s", "\u2581w", "at", "en", "or", "es", "\u2581", "e", "t", "a",
             "o", "i", "n", "s", "r", "h", "l", "d", "u", "c"]
    for wd in words:
        if len(tokens) == n_vocab:
            break
        tokens.append(wd)
        types.append(1)
    while len(tokens) < n_vocab:
        tokens.append(f"\u2581w{len(tokens)}")
        types.append(1)
    scores = [0.0, 0.0, 0.0] + [0.0] * 61 + [-float(i) for i in range(n_vocab - 64)]
    return [("tokenizer.ggml.model", STR, "llama"),
            ("tokenizer.ggml.tokens", ARR, tokens, STR),
            ("tokenizer.ggml.scores", ARR, scores, F32V),
            ("tokenizer.ggml.token_type", ARR, types, I32),
            ("tokenizer.ggml.bos_token_id", U32, 1), ("tokenizer.ggml.eos_token_id", U32, 2),
            ("tokenizer.ggml.unknown_token_id", U32, 0), ("tokenizer.ggml.add_bos_token", BOOL, True),
            ("tokenizer.ggml.add_eos_token", BOOL, False)]


def gpt2_tokenizer(n_vocab, pre):
    tokens = [chr(0x21 + i) if i < 94 else f"\u0120t{i}" for i in range(n_vocab - 2)] + ["<|endoftext|>", "<|im_end|>"]
    merges = ["\u0120 t", "t h", "h e", "i n"]
    types = [1] * (n_vocab - 2) + [3, 3]
    return [("tokenizer.ggml.model", STR, "gpt2"), ("tokenizer.ggml.pre", STR, pre),
            ("tokenizer.ggml.tokens", ARR, tokens, STR), ("tokenizer.ggml.token_type", ARR, types, I32),
            ("tokenizer.ggml.merges", ARR, merges, STR),
            ("tokenizer.ggml.eos_token_id", U32, n_vocab - 2), ("tokenizer.ggml.padding_token_id", U32, n_vocab - 2)]


def attn_tensors(i, d, n_head, n_head_kv, hd, bias=False):
    t = [(f"blk.{i}.attn_norm.weight", norm_weight(d)),
         (f"blk.{i}.attn_q.weight", rand([d, n_head * hd])),
         (f"blk.{i}.attn_k.weight", rand([d, n_head_kv * hd])),
         (f"blk.{i}.attn_v.weight", rand([d, n_head_kv * hd])),
         (f"blk.{i}.attn_output.weight", rand([n_head * hd, d]))]
    if bias:
        t += [(f"blk.{i}.attn_q.bias", rand([n_head * hd])), (f"blk.{i}.attn_k.bias", rand([n_head_kv * hd])),
              (f"blk.{i}.attn_v.bias", rand([n_head_kv * hd]))]
    return t


def moe_tensors(i, d, f, n_exp):
    return [(f"blk.{i}.ffn_gate_inp.weight", rand([d, n_exp])),
            (f"blk.{i}.ffn_gate_exps.weight", rand([d, f, n_exp])),
            (f"blk.{i}.ffn_down_exps.weight", rand([f, d, n_exp])),
            (f"blk.{i}.ffn_up_exps.weight", rand([d, f, n_exp]))]


# --- architectures ---------------------------------------------------------------------------------------------

MIXTRAL = dict(d=64, f=32, n_exp=4, k=2, n_layer=2, vocab=128, n_head=4, n_head_kv=2, hd=16)


def mixtral_gguf(legacy=False):
    c = MIXTRAL
    a = "llama"
    kv = general_kv("mixtral-tiny", 0) + [
        (f"{a}.vocab_size", U32, c["vocab"]), (f"{a}.context_length", U32, 256),
        (f"{a}.embedding_length", U32, c["d"]), (f"{a}.block_count", U32, c["n_layer"]),
        (f"{a}.feed_forward_length", U32, c["f"]), (f"{a}.rope.dimension_count", U32, c["hd"]),
        (f"{a}.attention.head_count", U32, c["n_head"]), (f"{a}.attention.head_count_kv", U32, c["n_head_kv"]),
        (f"{a}.expert_count", U32, c["n_exp"]), (f"{a}.expert_used_count", U32, c["k"]),
        (f"{a}.attention.layer_norm_rms_epsilon", F32V, 1e-5), (f"{a}.rope.freq_base", F32V, 1e6),
    ] + spm_tokenizer(c["vocab"])
    t = [("token_embd.weight", rand([c["d"], c["vocab"]]))]
    for i in range(c["n_layer"]):
        t += attn_tensors(i, c["d"], c["n_head"], c["n_head_kv"], c["hd"])
        t += [(f"blk.{i}.ffn_norm.weight", norm_weight(c["d"]))]
        if not legacy:
            t += moe_tensors(i, c["d"], c["f"], c["n_exp"])
        else:
            t += [(f"blk.{i}.ffn_gate_inp.weight", rand([c["d"], c["n_exp"]]))]
            # pre-#6387 converters wrote one 2-D tensor per expert, in no particular order ("sprinkled")
            per = []
            for e in range(c["n_exp"]):
                per += [(f"blk.{i}.ffn_gate.{e}.weight", rand([c["d"], c["f"]])),
                        (f"blk.{i}.ffn_down.{e}.weight", rand([c["f"], c["d"]])),
                        (f"blk.{i}.ffn_up.{e}.weight", rand([c["d"], c["f"]]))]
            t += per[1::2] + per[0::2]
    t += [("output_norm.weight", norm_weight(c["d"])), ("output.weight", rand([c["d"], c["vocab"]]))]
    return "llama", kv, t


def dense_gguf():
    """A plain (non-MoE) llama: valid GGUF that describe_model must refuse."""
    d, ff, V = 64, 64, 128
    a = "llama"
    kv = general_kv("dense-tiny", 0) + [
        (f"{a}.context_length", U32, 128), (f"{a}.embedding_length", U32, d), (f"{a}.block_count", U32, 1),
        (f"{a}.feed_forward_length", U32, ff), (f"{a}.rope.dimension_count", U32, 16),
        (f"{a}.attention.head_count", U32, 4), (f"{a}.attention.head_count_kv", U32, 4),
        (f"{a}.attention.layer_norm_rms_epsilon", F32V, 1e-5)]
    t = [("token_embd.weight", rand([d, V]))] + attn_tensors(0, d, 4, 4, 16) + [
        ("blk.0.ffn_norm.weight", norm_weight(d)), ("blk.0.ffn_gate.weight", rand([d, ff])),
        ("blk.0.ffn_down.weight", rand([ff, d])), ("blk.0.ffn_up.weight", rand([d, ff])),
        ("output_norm.weight", norm_weight(d))]
    return a, kv, t


QWEN3 = dict(d=64, f=32, n_exp=8, k=2, n_layer=2, vocab=128, n_head=4, n_head_kv=2, hd=32)


def qwen3moe_gguf():
    c = QWEN3
    a = "qwen3moe"
    kv = general_kv("qwen3moe-tiny", 0) + [
        (f"{a}.context_length", U32, 512), (f"{a}.embedding_length", U32, c["d"]),
        (f"{a}.block_count", U32, c["n_layer"]), (f"{a}.feed_forward_length", U32, 192),
        (f"{a}.expert_feed_forward_length", U32, c["f"]),
        (f"{a}.attention.head_count", U32, c["n_head"]), (f"{a}.attention.head_count_kv", U32, c["n_head_kv"]),
        (f"{a}.attention.key_length", U32, c["hd"]), (f"{a}.attention.value_length", U32, c["hd"]),
        (f"{a}.rope.freq_base", F32V, 1e6), (f"{a}.attention.layer_norm_rms_epsilon", F32V, 1e-6),
        (f"{a}.expert_count", U32, c["n_exp"]), (f"{a}.expert_used_count", U32, c["k"]),
    ] + gpt2_tokenizer(c["vocab"], "qwen2")
    t = [("token_embd.weight", rand([c["d"], c["vocab"]]))]
    for i in range(c["n_layer"]):
        t += attn_tensors(i, c["d"], c["n_head"], c["n_head_kv"], c["hd"])
        t += [(f"blk.{i}.attn_q_norm.weight", norm_weight(c["hd"])), (f"blk.{i}.attn_k_norm.weight", norm_weight(c["hd"])),
              (f"blk.{i}.ffn_norm.weight", norm_weight(c["d"]))]
        t += moe_tensors(i, c["d"], c["f"], c["n_exp"])
    t += [("output_norm.weight", norm_weight(c["d"])), ("output.weight", rand([c["d"], c["vocab"]]))]
    return a, kv, t


def qwen2moe_gguf():
    d, f, fsh, E, k, L, V, H, Hkv, hd = 64, 32, 64, 4, 2, 2, 128, 4, 2, 16
    a = "qwen2moe"
    kv = general_kv("qwen2moe-tiny", 1) + [
        (f"{a}.context_length", U32, 512), (f"{a}.embedding_length", U32, d), (f"{a}.block_count", U32, L),
        (f"{a}.feed_forward_length", U32, 128), (f"{a}.expert_feed_forward_length", U32, f),
        (f"{a}.expert_shared_feed_forward_length", U32, fsh),
        (f"{a}.attention.head_count", U32, H), (f"{a}.attention.head_count_kv", U32, Hkv),
        (f"{a}.rope.freq_base", F32V, 1e6), (f"{a}.attention.layer_norm_rms_epsilon", F32V, 1e-6),
        (f"{a}.expert_count", U32, E), (f"{a}.expert_used_count", U32, k),
    ] + gpt2_tokenizer(V, "qwen2")
    t = [("token_embd.weight", rand([d, V]))]
    for i in range(L):
        t += attn_tensors(i, d, H, Hkv, hd, bias=True)
        t += [(f"blk.{i}.ffn_norm.weight", norm_weight(d))]
        t += moe_tensors(i, d, f, E)
        t += [(f"blk.{i}.ffn_gate_inp_shexp.weight", rand([d])),
              (f"blk.{i}.ffn_gate_shexp.weight", rand([d, fsh])), (f"blk.{i}.ffn_down_shexp.weight", rand([fsh, d])),
              (f"blk.{i}.ffn_up_shexp.weight", rand([d, fsh]))]
    t += [("output_norm.weight", norm_weight(d)), ("output.weight", rand([d, V]))]
    return a, kv, t


def olmoe_gguf():
    d, f, E, k, L, V, H, hd = 64, 32, 8, 4, 2, 128, 4, 16
    a = "olmoe"
    kv = general_kv("olmoe-tiny", 0) + [
        (f"{a}.context_length", U32, 4096), (f"{a}.embedding_length", U32, d), (f"{a}.block_count", U32, L),
        (f"{a}.feed_forward_length", U32, f), (f"{a}.attention.head_count", U32, H),
        (f"{a}.attention.head_count_kv", U32, H), (f"{a}.rope.freq_base", F32V, 10000.0),
        (f"{a}.attention.layer_norm_rms_epsilon", F32V, 1e-5),
        (f"{a}.expert_count", U32, E), (f"{a}.expert_used_count", U32, k),
    ] + gpt2_tokenizer(V, "olmo")
    t = [("token_embd.weight", rand([d, V]))]
    for i in range(L):
        t += attn_tensors(i, d, H, H, hd)
        # OLMoE normalises the whole q/k projection (width d and Hkv*hd), not each head
        t += [(f"blk.{i}.attn_q_norm.weight", norm_weight(d)), (f"blk.{i}.attn_k_norm.weight", norm_weight(H * hd)),
              (f"blk.{i}.ffn_norm.weight", norm_weight(d))]
        t += moe_tensors(i, d, f, E)
    t += [("output_norm.weight", norm_weight(d)), ("output.weight", rand([d, V]))]
    return a, kv, t


def deepseek2_gguf():
    d, f, E, k, L, V, H = 64, 32, 4, 2, 3, 128, 4
    n_shared, n_dense, ff_dense = 2, 1, 96
    kv_lora, qk_rope, qk_nope, v_hd = 32, 16, 16, 16
    a = "deepseek2"
    kv = general_kv("deepseek2-tiny", 1) + [
        (f"{a}.context_length", U32, 2048), (f"{a}.embedding_length", U32, d), (f"{a}.block_count", U32, L),
        (f"{a}.feed_forward_length", U32, ff_dense), (f"{a}.expert_feed_forward_length", U32, f),
        (f"{a}.attention.head_count", U32, H), (f"{a}.attention.head_count_kv", U32, 1),
        (f"{a}.attention.key_length", U32, kv_lora + qk_rope), (f"{a}.attention.value_length", U32, kv_lora),
        (f"{a}.attention.key_length_mla", U32, qk_nope + qk_rope), (f"{a}.attention.value_length_mla", U32, v_hd),
        (f"{a}.attention.kv_lora_rank", U32, kv_lora), (f"{a}.rope.dimension_count", U32, qk_rope),
        (f"{a}.rope.freq_base", F32V, 10000.0), (f"{a}.attention.layer_norm_rms_epsilon", F32V, 1e-6),
        (f"{a}.leading_dense_block_count", U32, n_dense),
        (f"{a}.expert_count", U32, E), (f"{a}.expert_used_count", U32, k),
        (f"{a}.expert_shared_count", U32, n_shared), (f"{a}.expert_weights_scale", F32V, 2.5),
        (f"{a}.expert_weights_norm", BOOL, True), (f"{a}.expert_gating_func", U32, 2),
        (f"{a}.rope.scaling.type", STR, "yarn"), (f"{a}.rope.scaling.factor", F32V, 40.0),
        (f"{a}.rope.scaling.original_context_length", U32, 4096),
        (f"{a}.rope.scaling.yarn_log_multiplier", F32V, 0.0707),
    ] + gpt2_tokenizer(V, "deepseek-v3")
    t = [("token_embd.weight", rand([d, V]))]
    for i in range(L):
        t += [(f"blk.{i}.attn_norm.weight", norm_weight(d)),
              (f"blk.{i}.attn_q.weight", rand([d, H * (qk_nope + qk_rope)])),
              (f"blk.{i}.attn_kv_a_mqa.weight", rand([d, kv_lora + qk_rope])),
              (f"blk.{i}.attn_kv_a_norm.weight", norm_weight(kv_lora)),
              (f"blk.{i}.attn_k_b.weight", rand([qk_nope, kv_lora, H])),
              (f"blk.{i}.attn_v_b.weight", rand([kv_lora, v_hd, H])),
              (f"blk.{i}.attn_output.weight", rand([H * v_hd, d])),
              (f"blk.{i}.ffn_norm.weight", norm_weight(d))]
        if i < n_dense:
            t += [(f"blk.{i}.ffn_gate.weight", rand([d, ff_dense])), (f"blk.{i}.ffn_down.weight", rand([ff_dense, d])),
                  (f"blk.{i}.ffn_up.weight", rand([d, ff_dense]))]
        else:
            t += moe_tensors(i, d, f, E)
            t += [(f"blk.{i}.exp_probs_b.bias", rand([E])),
                  (f"blk.{i}.ffn_gate_shexp.weight", rand([d, f * n_shared])),
                  (f"blk.{i}.ffn_down_shexp.weight", rand([f * n_shared, d])),
                  (f"blk.{i}.ffn_up_shexp.weight", rand([d, f * n_shared]))]
    t += [("output_norm.weight", norm_weight(d)), ("output.weight", rand([d, V]))]
    return a, kv, t


def gpt_oss_gguf():
    d, f, E, k, L, V, H, Hkv, hd = 64, 32, 4, 2, 2, 128, 4, 2, 16
    a = "gpt-oss"
    kv = general_kv("gpt-oss-tiny", 38) + [
        (f"{a}.context_length", U32, 4096), (f"{a}.embedding_length", U32, d), (f"{a}.block_count", U32, L),
        (f"{a}.feed_forward_length", U32, f), (f"{a}.expert_feed_forward_length", U32, f),
        (f"{a}.attention.head_count", U32, H), (f"{a}.attention.head_count_kv", U32, Hkv),
        (f"{a}.attention.key_length", U32, hd), (f"{a}.attention.value_length", U32, hd),
        (f"{a}.rope.dimension_count", U32, hd), (f"{a}.rope.freq_base", F32V, 150000.0),
        (f"{a}.attention.layer_norm_rms_epsilon", F32V, 1e-5), (f"{a}.attention.sliding_window", U32, 128),
        (f"{a}.rope.scaling.type", STR, "yarn"), (f"{a}.rope.scaling.factor", F32V, 32.0),
        (f"{a}.rope.scaling.original_context_length", U32, 4096),
        (f"{a}.expert_count", U32, E), (f"{a}.expert_used_count", U32, k),
    ] + gpt2_tokenizer(V, "gpt-4o")
    t = [("token_embd.weight", rand([d, V]))]
    for i in range(L):
        t += attn_tensors(i, d, H, Hkv, hd, bias=True)
        t += [(f"blk.{i}.attn_output.bias", rand([d])), (f"blk.{i}.attn_sinks.weight", rand([H])),
              (f"blk.{i}.post_attention_norm.weight", norm_weight(d)),
              (f"blk.{i}.ffn_gate_inp.weight", rand([d, E])), (f"blk.{i}.ffn_gate_inp.bias", rand([E])),
              (f"blk.{i}.ffn_gate_exps.weight", rand([d, f, E])), (f"blk.{i}.ffn_down_exps.weight", rand([f, d, E])),
              (f"blk.{i}.ffn_up_exps.weight", rand([d, f, E])),
              (f"blk.{i}.ffn_gate_exps.bias", rand([f, E])), (f"blk.{i}.ffn_down_exps.bias", rand([d, E])),
              (f"blk.{i}.ffn_up_exps.bias", rand([f, E]))]
    t += [("output_norm.weight", norm_weight(d)), ("output.weight", rand([d, V]))]
    return a, kv, t


# ---------------------------------------------------------------------------------------------------------------
# Reading back: the expected.json reference

GGUF_SPLIT_RE = re.compile(r"^(.*)-(\d{5})-of-(\d{5})\.gguf$")


def gguf_shards(path: Path) -> list[Path]:
    m = GGUF_SPLIT_RE.match(path.name)
    if not m:
        return [path]
    n = int(m.group(3))
    return [path.with_name(f"{m.group(1)}-{i:05d}-of-{n:05d}.gguf") for i in range(1, n + 1)]


def gguf_metadata(reader: gguf.GGUFReader) -> dict:
    meta = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):  # the reader's pseudo-fields for the header (version, counts)
            continue
        if field.types and field.types[0] == gguf.GGUFValueType.ARRAY:
            meta[name] = {"array_len": len(field.data)}
        else:
            v = field.contents()
            if isinstance(v, float):
                v = float(np.float32(v)) if field.types[0] == gguf.GGUFValueType.FLOAT32 else v
            meta[name] = v
    return meta


def read_back_gguf(first: Path) -> dict:
    files = gguf_shards(first)
    tensors, metadata = [], None
    for idx, p in enumerate(files):
        r = gguf.GGUFReader(str(p))
        if metadata is None:
            metadata = gguf_metadata(r)
        for t in r.tensors:
            tensors.append({"name": t.name, "type": t.tensor_type.name, "ne": [int(x) for x in t.shape],
                            "file": idx, "offset": int(t.data_offset), "bytes": int(t.n_bytes)})
    return {"format": "gguf", "files": [p.name for p in files], "tensors": tensors, "metadata": metadata}


def gguf_model_summary(ref: dict) -> dict | None:
    """The expected model description, computed from the read-back tensor table and metadata alone."""
    meta = ref["metadata"]
    arch = meta.get("general.architecture")
    if f"{arch}.expert_count" not in meta:
        return None
    n_exp = meta[f"{arch}.expert_count"]
    per_expert: dict[tuple[int, int], int] = {}
    expert_total = 0
    n_ff_exp = None
    for t in ref["tensors"]:
        m = re.fullmatch(r"blk\.(\d+)\.ffn_(gate|up|down|gate_up)_exps\.(weight|bias)", t["name"])
        if m:
            layer = int(m.group(1))
            assert t["bytes"] % n_exp == 0
            for e in range(n_exp):
                per_expert[(layer, e)] = per_expert.get((layer, e), 0) + t["bytes"] // n_exp
            expert_total += t["bytes"]
            if m.group(2) == "gate" and m.group(3) == "weight":
                n_ff_exp = t["ne"][1]
            continue
        m = re.fullmatch(r"blk\.(\d+)\.ffn_(gate|up|down)\.(\d+)\.weight", t["name"])
        if m:
            key = (int(m.group(1)), int(m.group(3)))
            per_expert[key] = per_expert.get(key, 0) + t["bytes"]
            expert_total += t["bytes"]
            if m.group(2) == "gate":
                n_ff_exp = t["ne"][1]
    all_bytes = sum(t["bytes"] for t in ref["tensors"])
    n_shared = 0
    if f"{arch}.expert_shared_count" in meta:
        n_shared = meta[f"{arch}.expert_shared_count"]
    elif any(t["name"].endswith("ffn_gate_shexp.weight") for t in ref["tensors"]):
        n_shared = 1
    return {"architecture": arch, "n_layers": meta[f"{arch}.block_count"],
            "n_moe_layers": len({layer for layer, _ in per_expert}),
            "n_experts": n_exp, "n_experts_used": meta[f"{arch}.expert_used_count"],
            "expert_bytes": max(per_expert.values()), "total_expert_bytes": expert_total,
            "resident_bytes": all_bytes - expert_total, "n_ff_exp": n_ff_exp, "n_shared_experts": n_shared}


def parse_safetensors_header(path: Path) -> tuple[int, dict]:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n).decode("utf-8"))
    return 8 + n, header


def read_back_safetensors(entry: Path) -> dict:
    """entry: a model.safetensors file or a model.safetensors.index.json."""
    if entry.name.endswith(".index.json"):
        index = json.loads(entry.read_text())
        shard_names = sorted(set(index["weight_map"].values()))
        files = [entry.with_name(s) for s in shard_names]
    else:
        index, files = None, [entry]
    tensors = []
    for idx, p in enumerate(files):
        data_start, header = parse_safetensors_header(p)
        header.pop("__metadata__", None)
        # cross-check the hand parse against the library's own reader
        with safetensors.safe_open(str(p), framework="numpy") as so:
            assert sorted(so.keys()) == sorted(header.keys()), p
        for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            b, e = info["data_offsets"]
            tensors.append({"name": name, "type": info["dtype"], "ne": list(reversed(info["shape"])), "file": idx,
                            "offset": data_start + b, "bytes": e - b})
            if index is not None:
                assert index["weight_map"][name] == p.name
    if index is not None:
        assert index["metadata"]["total_size"] == sum(t["bytes"] for t in tensors)
    return {"format": "safetensors", "files": [p.name for p in files], "tensors": tensors, "metadata": {}}


def hf_model_summary(ref: dict, config: dict) -> dict:
    """Expected description of an HF per-expert checkpoint, from the read-back tensors and config.json."""
    mt = config["model_type"]
    arch = {"mixtral": "llama", "qwen3_moe": "qwen3moe", "qwen2_moe": "qwen2moe", "olmoe": "olmoe",
            "gpt_oss": "gpt-oss"}[mt]
    n_exp = config.get("num_local_experts", config.get("num_experts"))
    expert_re = re.compile(r"model\.layers\.(\d+)\.(?:block_sparse_moe|mlp)\.experts\.(\d+)\.(w1|w2|w3|gate_proj|up_proj|down_proj)\.weight")
    per_expert: dict[tuple[int, int], int] = {}
    total = 0
    n_ff_exp = None
    fused_re = re.compile(r"model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)(_blocks|_scales|_bias)?")
    for t in ref["tensors"]:
        m = fused_re.fullmatch(t["name"])
        if m:  # gpt-oss: expert dimension leading, so each expert owns 1/E of every fused tensor
            assert t["bytes"] % n_exp == 0
            for e in range(n_exp):
                key = (int(m.group(1)), e)
                per_expert[key] = per_expert.get(key, 0) + t["bytes"] // n_exp
            total += t["bytes"]
            if m.group(2) == "gate_up_proj" and m.group(3) == "_blocks":
                n_ff_exp = t["ne"][2] // 2
            continue
        m = expert_re.fullmatch(t["name"])
        if m:
            key = (int(m.group(1)), int(m.group(2)))
            per_expert[key] = per_expert.get(key, 0) + t["bytes"]
            total += t["bytes"]
            if m.group(3) in ("w1", "gate_proj"):
                n_ff_exp = t["ne"][1]
    all_bytes = sum(t["bytes"] for t in ref["tensors"])
    return {"architecture": arch, "n_layers": config["num_hidden_layers"],
            "n_moe_layers": len({layer for layer, _ in per_expert}), "n_experts": n_exp,
            "n_experts_used": config["num_experts_per_tok"], "expert_bytes": max(per_expert.values()),
            "total_expert_bytes": total, "resident_bytes": all_bytes - total, "n_ff_exp": n_ff_exp,
            "n_shared_experts": 0}


def write_expected(model_path: Path, ref: dict, model: dict | None):
    if model is not None:
        ref = dict(ref, model=model)
    # one tensor / metadata key per line: diffable, and a third of the size of an indented dump
    parts = []
    for key, val in ref.items():
        if key == "tensors":
            body = ",\n".join("  " + json.dumps(t) for t in val)
            parts.append(f' "tensors": [\n{body}\n ]')
        elif key == "metadata" and val:
            body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in val.items())
            parts.append(f' "metadata": {{\n{body}\n }}')
        else:
            parts.append(f" {json.dumps(key)}: {json.dumps(val)}")
    text = "{\n" + ",\n".join(parts) + "\n}\n"
    assert json.loads(text) == ref
    Path(str(model_path) + ".expected.json").write_text(text)


# ---------------------------------------------------------------------------------------------------------------
# safetensors writing (BF16 via raw bits: numpy has no bfloat16)

def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # round to nearest even
    return rounded.astype(np.uint16)


def save_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]], raw_u8: dict | None = None):
    """tensors: name -> (dtype "F32"|"F16"|"BF16", float32 array in PyTorch shape); raw_u8: name -> uint8 array."""
    keep, specs = [], {}
    for name, arr in (raw_u8 or {}).items():
        arr = np.ascontiguousarray(arr, dtype=np.uint8)
        keep.append(arr)
        specs[name] = TensorSpec(dtype="uint8", shape=list(arr.shape), data_ptr=arr.ctypes.data, data_len=arr.nbytes)
    for name, (dt, arr) in tensors.items():
        if dt == "F32":
            raw, dname = np.ascontiguousarray(arr, dtype=np.float32), "float32"
        elif dt == "F16":
            raw, dname = np.ascontiguousarray(arr.astype(np.float16)), "float16"
        elif dt == "BF16":
            raw, dname = to_bf16_bits(arr), "bfloat16"
        else:
            raise ValueError(dt)
        keep.append(raw)
        specs[name] = TensorSpec(dtype=dname, shape=list(arr.shape), data_ptr=raw.ctypes.data, data_len=raw.nbytes)
    safetensors.serialize_file(specs, str(path), metadata={"format": "pt"})


def hf_common(cfg, layer_extra):
    """HF llama-style tensors (PyTorch shapes) with a MoE block per layer."""
    d, V, H, Hkv, hd = cfg["hidden_size"], cfg["vocab_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    t = {"model.embed_tokens.weight": ("BF16", rand([d, V])), "model.norm.weight": ("F32", norm_weight(d)),
         "lm_head.weight": ("BF16", rand([d, V]))}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = ("F32", norm_weight(d))
        t[p + "post_attention_layernorm.weight"] = ("F32", norm_weight(d))
        t[p + "self_attn.q_proj.weight"] = ("BF16", rand([d, H * hd]))
        t[p + "self_attn.k_proj.weight"] = ("BF16", rand([d, Hkv * hd]))
        t[p + "self_attn.v_proj.weight"] = ("BF16", rand([d, Hkv * hd]))
        t[p + "self_attn.o_proj.weight"] = ("BF16", rand([H * hd, d]))
        t.update(layer_extra(i, p))
    return t


def mixtral_hf(out: Path):
    c = MIXTRAL
    cfg = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": c["d"],
           "intermediate_size": c["f"], "num_hidden_layers": c["n_layer"], "num_attention_heads": c["n_head"],
           "num_key_value_heads": c["n_head_kv"], "head_dim": c["hd"], "num_local_experts": c["n_exp"],
           "num_experts_per_tok": c["k"], "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "vocab_size": c["vocab"],
           "max_position_embeddings": 256, "hidden_act": "silu", "tie_word_embeddings": False,
           "router_aux_loss_coef": 0.02, "output_router_logits": False, "sliding_window": None,
           "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"}

    def moe(i, p):
        t = {p + "block_sparse_moe.gate.weight": ("F32", rand([c["d"], c["n_exp"]]))}
        for e in range(c["n_exp"]):
            q = p + f"block_sparse_moe.experts.{e}."
            t[q + "w1.weight"] = ("BF16", rand([c["d"], c["f"]]))   # gate [f, d]
            t[q + "w2.weight"] = ("F16", rand([c["f"], c["d"]]))    # down [d, f]: another dtype on purpose
            t[q + "w3.weight"] = ("BF16", rand([c["d"], c["f"]]))   # up   [f, d]
        return t

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    save_safetensors(out / "model.safetensors", hf_common(cfg, moe))
    return cfg


def qwen3moe_hf_tensors(cfg):
    d, f, E, hd = cfg["hidden_size"], cfg["moe_intermediate_size"], cfg["num_experts"], cfg["head_dim"]

    def moe(i, p):
        t = {p + "self_attn.q_norm.weight": ("F32", norm_weight(hd)), p + "self_attn.k_norm.weight": ("F32", norm_weight(hd)),
             p + "mlp.gate.weight": ("F32", rand([d, E]))}
        for e in range(E):
            q = p + f"mlp.experts.{e}."
            t[q + "gate_proj.weight"] = ("BF16", rand([d, f]))
            t[q + "up_proj.weight"] = ("BF16", rand([d, f]))
            t[q + "down_proj.weight"] = ("BF16", rand([f, d]))
        return t
    return hf_common(cfg, moe)


def qwen3moe_config():
    c = dict(QWEN3, n_exp=4, hd=16)  # smaller than the GGUF twin: keeps the committed fixtures small
    return {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": c["d"],
            "intermediate_size": 192, "moe_intermediate_size": c["f"], "num_hidden_layers": c["n_layer"],
            "num_attention_heads": c["n_head"], "num_key_value_heads": c["n_head_kv"], "head_dim": c["hd"],
            "num_experts": c["n_exp"], "num_experts_per_tok": c["k"], "norm_topk_prob": True,
            "decoder_sparse_step": 1, "mlp_only_layers": [], "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "vocab_size": c["vocab"], "max_position_embeddings": 512, "hidden_act": "silu",
            "tie_word_embeddings": False, "attention_bias": False, "router_aux_loss_coef": 0.001,
            "bos_token_id": 151643, "eos_token_id": 151645, "torch_dtype": "bfloat16"}


def qwen3moe_hf(out: Path, shards: int = 1):
    cfg = qwen3moe_config()
    tensors = qwen3moe_hf_tensors(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    if shards == 1:
        save_safetensors(out / "model.safetensors", tensors)
        return cfg
    # transformers' save_pretrained fills shards in state-dict order; split by layer index so each shard holds
    # whole layers (embeddings go with the first, the head with the last)
    names = list(tensors.keys())
    groups = [[] for _ in range(shards)]
    for n in names:
        m = re.match(r"model\.layers\.(\d+)\.", n)
        if m:
            g = min(int(m.group(1)) * shards // cfg["num_hidden_layers"], shards - 1)
        else:
            g = 0 if n.startswith("model.embed_tokens") else shards - 1
        groups[g].append(n)
    weight_map, total = {}, 0
    for s, grp in enumerate(groups):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_safetensors(out / fname, {n: tensors[n] for n in grp})
        for n in grp:
            weight_map[n] = fname
    for n, (dt, arr) in tensors.items():
        total += arr.size * (4 if dt == "F32" else 2)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return cfg


def mxfp4_hf(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantize rows of w [..., n] to the HF gpt-oss MXFP4 checkpoint layout: blocks [..., n/32, 16] (byte b holds
    element 2b in the low nibble, 2b+1 in the high one) and E8M0 scales [..., n/32] (docs/model-formats.md §5.3).
    Uses gguf's MXFP4 quantizer, whose block is the scale byte then byte j = element j (low) | element j+16 (high)."""
    q = quantize(w, Q.MXFP4).reshape(*w.shape[:-1], w.shape[-1] // 32, 17)
    scales = q[..., 0].copy()
    qs = q[..., 1:]
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # element order 0..31
    blocks = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
    return blocks, scales


def gpt_oss_hf(out: Path):
    d, f, E, k, L, V, H, Hkv, hd = 64, 32, 4, 2, 2, 128, 4, 2, 16
    cfg = {"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_size": d, "intermediate_size": f,
           "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": Hkv, "head_dim": hd,
           "num_local_experts": E, "num_experts_per_tok": k, "experts_per_token": k, "vocab_size": V,
           "rms_norm_eps": 1e-5, "rope_theta": 150000.0, "sliding_window": 128, "swiglu_limit": 7.0,
           "attention_bias": True, "tie_word_embeddings": False, "max_position_embeddings": 4096,
           "layer_types": ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(L)],
           "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                            "original_max_position_embeddings": 4096, "truncate": False},
           "quantization_config": {"quant_method": "mxfp4",
                                   "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                              "model.embed_tokens", "lm_head"]},
           "eos_token_id": V - 2, "pad_token_id": V - 2, "torch_dtype": "bfloat16"}
    t = {"model.embed_tokens.weight": ("BF16", rand([d, V])), "model.norm.weight": ("BF16", norm_weight(d)),
         "lm_head.weight": ("BF16", rand([d, V]))}
    raw = {}
    for i in range(L):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = ("BF16", norm_weight(d))
        t[p + "post_attention_layernorm.weight"] = ("BF16", norm_weight(d))
        for n, (o, ii) in {"q": (H * hd, d), "k": (Hkv * hd, d), "v": (Hkv * hd, d), "o": (d, H * hd)}.items():
            t[p + f"self_attn.{n}_proj.weight"] = ("BF16", rand([ii, o]))
            t[p + f"self_attn.{n}_proj.bias"] = ("BF16", rand([o]))
        t[p + "self_attn.sinks"] = ("BF16", rand([H]))
        t[p + "mlp.router.weight"] = ("BF16", rand([d, E]))
        t[p + "mlp.router.bias"] = ("BF16", rand([E]))
        gate, up = rand([d, f, E]), rand([d, f, E])           # [E, f, d] each
        gate_up = np.empty((E, 2 * f, d), np.float32)
        gate_up[:, 0::2], gate_up[:, 1::2] = gate, up          # rows interleaved: even = gate, odd = up
        gb, gs = mxfp4_hf(gate_up)
        db, ds = mxfp4_hf(rand([f, d, E]))                     # down [E, d, f]
        raw[p + "mlp.experts.gate_up_proj_blocks"] = gb
        raw[p + "mlp.experts.gate_up_proj_scales"] = gs
        raw[p + "mlp.experts.down_proj_blocks"] = db
        raw[p + "mlp.experts.down_proj_scales"] = ds
        t[p + "mlp.experts.gate_up_proj_bias"] = ("BF16", rand([2 * f, E]))
        t[p + "mlp.experts.down_proj_bias"] = ("BF16", rand([d, E]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    save_safetensors(out / "model.safetensors", t, raw_u8=raw)
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# Broken files for the CLI end-to-end tests (the parser's own negative tests build theirs in C++)

def write_bad(out: Path, good_gguf: Path, good_st: Path):
    bad = out / "bad"
    bad.mkdir(parents=True, exist_ok=True)
    data = good_gguf.read_bytes()
    (bad / "truncated.gguf").write_bytes(data[:12288])  # header intact, tensor data runs past the end of file
    (bad / "bad-magic.gguf").write_bytes(b"GGUX" + data[4:256])
    st = good_st.read_bytes()
    (n,) = struct.unpack("<Q", st[:8])
    (bad / "truncated.safetensors").write_bytes(st[: 8 + n + 1000])  # header intact, data cut short
    (bad / "empty.gguf").write_bytes(b"")


# ---------------------------------------------------------------------------------------------------------------

def reseed(family: str):
    """One generator per model family, so the F32 and quantized variants of a model hold the same weights."""
    global RNG
    RNG = np.random.default_rng([SEED, zlib.crc32(family.encode())])


def gguf_fixture(out: Path, fname: str, builder, **kw):
    reseed(builder.__name__ if builder.__name__ != "<lambda>" else fname)
    arch, kv, t = builder()
    path = out / fname
    write_gguf(path, arch, kv, t, **kw)
    first = path
    if kw.get("split_max_tensors"):
        m = re.match(r"^(.*)\.gguf$", fname)
        shards = sorted(out.glob(f"{m.group(1)}-*-of-*.gguf"))
        first = shards[0]
    ref = read_back_gguf(first)
    write_expected(first, ref, gguf_model_summary(ref))
    return first


# Subdirectories of tests/fixtures that this script owns and regenerates from scratch.
OWNED_DIRS = {"mixtral-tiny-hf", "qwen3moe-tiny-hf", "qwen3moe-tiny-hf-sharded", "gpt-oss-tiny-hf", "bad"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests" / "fixtures"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Remove only what this script writes: tests/fixtures also holds other people's files (traces/).
    for p in out.iterdir():
        if p.is_dir() and p.name in OWNED_DIRS:
            shutil.rmtree(p)
        elif p.is_file() and (p.name.endswith(".gguf") or p.name.endswith(".gguf.expected.json")):
            p.unlink()

    # GGUF. Every fixture draws from the one seeded generator in this fixed order, so the bytes are reproducible.
    gguf_fixture(out, "mixtral-tiny-f32.gguf", mixtral_gguf)
    gguf_fixture(out, "mixtral-tiny-q8_0.gguf", mixtral_gguf, expert_type=Q.Q8_0)
    q4 = gguf_fixture(out, "mixtral-tiny-q4_0.gguf", mixtral_gguf, expert_type=Q.Q4_0, other_type=Q.Q8_0)
    gguf_fixture(out, "mixtral-tiny-q8_0-split.gguf", mixtral_gguf, expert_type=Q.Q8_0, split_max_tensors=14)
    gguf_fixture(out, "mixtral-legacy-tiny-f16.gguf", lambda: mixtral_gguf(legacy=True), expert_type=Q.F16,
                 other_type=Q.F16)
    gguf_fixture(out, "qwen3moe-tiny-f32.gguf", qwen3moe_gguf)
    gguf_fixture(out, "qwen3moe-tiny-q8_0.gguf", qwen3moe_gguf, expert_type=Q.Q8_0, other_type=Q.F16)
    gguf_fixture(out, "qwen2moe-tiny-f16.gguf", qwen2moe_gguf, expert_type=Q.F16, other_type=Q.F16)
    gguf_fixture(out, "olmoe-tiny-q8_0.gguf", olmoe_gguf, expert_type=Q.Q8_0)
    gguf_fixture(out, "deepseek2-tiny-f16.gguf", deepseek2_gguf, expert_type=Q.F16, other_type=Q.F16)
    gguf_fixture(out, "gpt-oss-tiny-mxfp4.gguf", gpt_oss_gguf, expert_type=Q.MXFP4)
    gguf_fixture(out, "dense-tiny-f16.gguf", dense_gguf, other_type=Q.F16)

    # Hugging Face safetensors directories
    d = out / "mixtral-tiny-hf"
    reseed("mixtral_hf")
    cfg = mixtral_hf(d)
    ref = read_back_safetensors(d / "model.safetensors")
    write_expected(d / "model.safetensors", ref, hf_model_summary(ref, cfg))
    d = out / "qwen3moe-tiny-hf"
    reseed("qwen3moe_hf")
    cfg = qwen3moe_hf(d)
    ref = read_back_safetensors(d / "model.safetensors")
    write_expected(d / "model.safetensors", ref, hf_model_summary(ref, cfg))
    d = out / "qwen3moe-tiny-hf-sharded"
    reseed("qwen3moe_hf")
    cfg = qwen3moe_hf(d, shards=2)
    ref = read_back_safetensors(d / "model.safetensors.index.json")
    write_expected(d / "model.safetensors.index.json", ref, hf_model_summary(ref, cfg))

    d = out / "gpt-oss-tiny-hf"
    reseed("gpt_oss_hf")
    cfg = gpt_oss_hf(d)
    ref = read_back_safetensors(d / "model.safetensors")
    write_expected(d / "model.safetensors", ref, hf_model_summary(ref, cfg))

    write_bad(out, q4, out / "mixtral-tiny-hf" / "model.safetensors")

    mine = [p for p in out.rglob("*") if p.is_file() and
            (p.parent == out or p.relative_to(out).parts[0] in OWNED_DIRS)]
    print(f"make_fixtures: wrote {len(mine)} files, {sum(p.stat().st_size for p in mine)} bytes in {out}")


if __name__ == "__main__":
    sys.exit(main())
