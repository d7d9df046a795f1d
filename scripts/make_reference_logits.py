#!/usr/bin/env python3
"""Regenerates tests/fixtures/ref/: tiny random-weight MoE models (Mixtral, Qwen3-MoE, OLMoE, Qwen2-MoE, DeepSeek-V2,
gpt-oss) built with Hugging Face `transformers`, saved
both as safetensors (save_pretrained) and as GGUF (F32, written with the `gguf` package following llama.cpp's
convert_hf_to_gguf.py conventions), plus the reference logits transformers computes for fixed prompts.

The reference is transformers itself (the runtime is not its own oracle): the C++ forward pass must reproduce
ref.bin from either file format. GGUF conventions reproduced here (docs/model-formats.md §3, §5):
  - names blk.N.*, merged experts ffn_{gate,up,down}_exps stacked over the expert index (ne2 = expert);
  - numpy shapes are PyTorch shapes, which gguf writes reversed into ggml's ne order;
  - llama (Mixtral): attn_q / attn_k rows are PERMUTED (LlamaModel.permute) so that NORM (adjacent-pair) RoPE
    on the GGUF weights equals HF's rotate_half RoPE on the raw weights; qwen3moe and olmoe are NEOX, unpermuted;
  - olmoe: attn_q_norm / attn_k_norm over the whole projection, expert width in feed_forward_length;
  - qwen2moe: attn_{q,k,v}.bias, the shared expert ffn_{gate,up,down}_shexp and its gate ffn_gate_inp_shexp {n_embd}.

Outputs (deterministic: fixed seed, no timestamps):
  <name>-hf/            config.json + model.safetensors
  <name>-f32.gguf
  mixtral-q8_0.gguf     the same Mixtral weights with Q8_0 matrices (where rows are whole 32-blocks)
  deepseek2-legacy-f32.gguf  DeepSeek-V2 with the unsplit attn_kv_b of older converters (same reference)
  gpt-oss-mxfp4.gguf    gpt-oss with MXFP4 expert matrices (reference: transformers on the dequantized experts)
  DeepSeek-V2 and gpt-oss are committed ahead of their forward pass, which refuses them until it exists.
  ref.json              {"models": [{"name", "arch", "gguf", "hf", "n_vocab", "prompts", "logits_offset",
                         "min_topk_gap", ["gguf_q8_0", "q8_0_logits_offset", "q8_0_min_topk_gap"]}]}
  ref.bin               float32 little-endian logits, per model, per prompt, per position: (n_tok, n_vocab);
                        at q8_0_logits_offset (floats) those of the Q8_0 variant, same layout

Usage: scripts/make_reference_logits.py [--out DIR]. Requires torch, transformers (4.x or 5.x), numpy, gguf.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch
import transformers
import gguf
from gguf.quants import dequantize, quantize

SEED = 1234
PROMPTS = [[1, 17, 42, 99, 5, 77, 3, 120], [2, 64, 64, 8, 31, 127, 0]]  # token ids modulo the vocabulary


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # convert_hf_to_gguf.py LlamaModel.permute: within each head, rows (first half, second half) are interleaved
    # so that adjacent-pair rotation of the permuted rows equals rotate_half on the original rows.
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def experts_of(sd: dict, moe: str, n_exp: int, f: int):
    """(gate [E,f,d], up [E,f,d], down [E,d,f]) from either the fused v5 parameters or per-expert v4 ones."""
    if moe + "experts.gate_up_proj" in sd:
        gu = sd[moe + "experts.gate_up_proj"]  # [E, 2f, d]: gate rows first, then up (chunk(2) in forward)
        return gu[:, :f, :], gu[:, f:, :], sd[moe + "experts.down_proj"]
    names = ("w1", "w3", "w2") if moe.endswith("block_sparse_moe.") else ("gate_proj", "up_proj", "down_proj")
    stack = lambda n: np.stack([sd[f"{moe}experts.{e}.{n}.weight"] for e in range(n_exp)])
    return stack(names[0]), stack(names[1]), stack(names[2])


def write_gguf(path: Path, arch: str, cfg, sd: dict, qtype=None):
    """qtype (e.g. Q8_0): matrices whose rows are a whole number of blocks are stored quantized (the router and
    norms stay F32, as llama.cpp's converter and llama-quant keep them)."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(path.stem)
    L, d, V = cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size
    H, Hkv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or d // H
    w.add_block_count(L)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(d)
    w.add_head_count(H)
    w.add_head_count_kv(Hkv)
    w.add_rope_freq_base(float(cfg.rope_theta if hasattr(cfg, "rope_theta") else cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_vocab_size(V)
    w.add_rope_dimension_count(hd)
    if arch == "llama":
        n_exp, f = cfg.num_local_experts, cfg.intermediate_size
        w.add_feed_forward_length(f)
        moe_name = lambda il: f"model.layers.{il}.mlp." if f"model.layers.{il}.mlp.gate.weight" in sd \
            else f"model.layers.{il}.block_sparse_moe."
    elif arch == "qwen2moe":
        n_exp, f = cfg.num_experts, cfg.moe_intermediate_size
        w.add_feed_forward_length(cfg.intermediate_size)
        w.add_expert_feed_forward_length(f)
        w.add_expert_shared_feed_forward_length(cfg.shared_expert_intermediate_size)
        moe_name = lambda il: f"model.layers.{il}.mlp."
    elif arch == "olmoe":  # the expert width is feed_forward_length (docs/model-formats.md §3.2)
        n_exp, f = cfg.num_experts, cfg.intermediate_size
        w.add_feed_forward_length(f)
        moe_name = lambda il: f"model.layers.{il}.mlp."
    else:
        n_exp, f = cfg.num_experts, cfg.moe_intermediate_size
        w.add_feed_forward_length(cfg.intermediate_size)
        w.add_expert_feed_forward_length(f)
        w.add_key_length(hd)
        w.add_value_length(hd)
        moe_name = lambda il: f"model.layers.{il}.mlp."
    w.add_expert_count(n_exp)
    w.add_expert_used_count(cfg.num_experts_per_tok)

    def t(name, a):
        a = np.ascontiguousarray(a, dtype=np.float32)
        if qtype is not None and a.ndim >= 2 and "ffn_gate_inp" not in name and a.shape[-1] % 32 == 0:
            w.add_tensor(name, quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, a)
    t("token_embd.weight", sd["model.embed_tokens.weight"])
    t("output_norm.weight", sd["model.norm.weight"])
    t("output.weight", sd["lm_head.weight"])
    for il in range(L):
        p, b = f"model.layers.{il}.", f"blk.{il}."
        q, k = sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.k_proj.weight"]
        if arch == "llama":
            q, k = llama_permute(q, H), llama_permute(k, Hkv)
        t(b + "attn_norm.weight", sd[p + "input_layernorm.weight"])
        t(b + "attn_q.weight", q)
        t(b + "attn_k.weight", k)
        t(b + "attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        t(b + "attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        for proj in ("q", "k", "v"):  # qwen2moe: qkv biases
            if p + f"self_attn.{proj}_proj.bias" in sd:
                t(b + f"attn_{proj}.bias", sd[p + f"self_attn.{proj}_proj.bias"])
        if arch in ("qwen3moe", "olmoe"):  # qwen3moe: per head {hd}; olmoe: whole projection {d}, {hd*n_kv}
            t(b + "attn_q_norm.weight", sd[p + "self_attn.q_norm.weight"])
            t(b + "attn_k_norm.weight", sd[p + "self_attn.k_norm.weight"])
        t(b + "ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        moe = moe_name(il)
        t(b + "ffn_gate_inp.weight", sd[moe + "gate.weight"])
        gate, up, down = experts_of(sd, moe, n_exp, f)
        t(b + "ffn_gate_exps.weight", gate)
        t(b + "ffn_up_exps.weight", up)
        t(b + "ffn_down_exps.weight", down)
        if moe + "shared_expert.gate_proj.weight" in sd:  # qwen2moe: one shared expert with a sigmoid gate
            t(b + "ffn_gate_inp_shexp.weight", sd[moe + "shared_expert_gate.weight"].reshape(-1))  # {n_embd}
            t(b + "ffn_gate_shexp.weight", sd[moe + "shared_expert.gate_proj.weight"])
            t(b + "ffn_up_shexp.weight", sd[moe + "shared_expert.up_proj.weight"])
            t(b + "ffn_down_shexp.weight", sd[moe + "shared_expert.down_proj.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_gguf_deepseek2(path: Path, cfg, sd: dict, mla: bool = True):
    """DeepSeek-V2 the way convert_hf_to_gguf.py DeepseekV2Model writes it (docs/model-formats.md §3.2): with mla=True
    the current MLA form (kv_b_proj split into attn_k_b, transposed, and attn_v_b; head_count_kv = 1 and the
    key/value lengths of the compressed cache, plus key_length_mla/value_length_mla), else the legacy attn_kv_b."""
    a = "deepseek2"
    w = gguf.GGUFWriter(str(path), a)
    w.add_name(path.stem)
    L, d, V, H = cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size, cfg.num_attention_heads
    nope, rope_d, v_hd, kv_lora = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank
    E, f = cfg.n_routed_experts, cfg.moe_intermediate_size
    rp = cfg.rope_parameters
    w.add_block_count(L)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(d)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(H)
    w.add_head_count_kv(1 if mla else H)
    w.add_rope_freq_base(float(rp["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_vocab_size(V)
    w.add_uint32(f"{a}.leading_dense_block_count", cfg.first_k_dense_replace)
    w.add_uint32(f"{a}.attention.kv_lora_rank", kv_lora)
    if mla:
        w.add_key_length(kv_lora + rope_d)
        w.add_value_length(kv_lora)
        w.add_uint32(f"{a}.attention.key_length_mla", nope + rope_d)
        w.add_uint32(f"{a}.attention.value_length_mla", v_hd)
    else:
        w.add_key_length(nope + rope_d)
        w.add_value_length(v_hd)
    w.add_expert_feed_forward_length(f)
    w.add_expert_count(E)
    w.add_expert_used_count(cfg.num_experts_per_tok)
    w.add_uint32(f"{a}.expert_shared_count", cfg.n_shared_experts)
    w.add_float32(f"{a}.expert_weights_scale", float(cfg.routed_scaling_factor))
    if cfg.norm_topk_prob:
        w.add_bool(f"{a}.expert_weights_norm", True)
    w.add_uint32(f"{a}.expert_gating_func", 1)  # softmax
    w.add_rope_dimension_count(rope_d)
    if rp.get("rope_type") == "yarn":
        w.add_string(f"{a}.rope.scaling.type", "yarn")
        w.add_float32(f"{a}.rope.scaling.factor", float(rp["factor"]))
        w.add_uint32(f"{a}.rope.scaling.original_context_length", int(rp["original_max_position_embeddings"]))
        # The converter writes 0.1 * mscale_all_dim; llama.cpp divides it back (docs/model-formats.md §3.3).
        w.add_float32(f"{a}.rope.scaling.yarn_log_multiplier", 0.1 * float(rp["mscale_all_dim"]))

    def t(name, arr):
        w.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32))
    t("token_embd.weight", sd["model.embed_tokens.weight"])
    t("output_norm.weight", sd["model.norm.weight"])
    t("output.weight", sd["lm_head.weight"])
    for il in range(L):
        p, b = f"model.layers.{il}.", f"blk.{il}."
        t(b + "attn_norm.weight", sd[p + "input_layernorm.weight"])
        t(b + "attn_q.weight", sd[p + "self_attn.q_proj.weight"])
        t(b + "attn_kv_a_mqa.weight", sd[p + "self_attn.kv_a_proj_with_mqa.weight"])
        t(b + "attn_kv_a_norm.weight", sd[p + "self_attn.kv_a_layernorm.weight"])
        kv_b = sd[p + "self_attn.kv_b_proj.weight"]  # (H * (nope + v_hd), kv_lora)
        if mla:
            per_head = kv_b.reshape(H, nope + v_hd, kv_lora)
            t(b + "attn_k_b.weight", per_head[:, :nope, :].transpose(0, 2, 1))  # (H, kv_lora, nope): ne {nope, kv_lora, H}
            t(b + "attn_v_b.weight", per_head[:, nope:, :])                     # (H, v_hd, kv_lora): ne {kv_lora, v_hd, H}
        else:
            t(b + "attn_kv_b.weight", kv_b)
        t(b + "attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        t(b + "ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        if il < cfg.first_k_dense_replace:
            t(b + "ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
            t(b + "ffn_up.weight", sd[p + "mlp.up_proj.weight"])
            t(b + "ffn_down.weight", sd[p + "mlp.down_proj.weight"])
            continue
        moe = p + "mlp."
        t(b + "ffn_gate_inp.weight", sd[moe + "gate.weight"])
        gate, up, down = experts_of(sd, moe, E, f)
        t(b + "ffn_gate_exps.weight", gate)
        t(b + "ffn_up_exps.weight", up)
        t(b + "ffn_down_exps.weight", down)
        t(b + "ffn_gate_shexp.weight", sd[moe + "shared_experts.gate_proj.weight"])
        t(b + "ffn_up_shexp.weight", sd[moe + "shared_experts.up_proj.weight"])
        t(b + "ffn_down_shexp.weight", sd[moe + "shared_experts.down_proj.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gpt_oss_experts(sd: dict, moe: str):
    """HF gate_up_proj [E, d, 2f] holds gate and up INTERLEAVED along the last axis (gate = [..., ::2]); the GGUF has
    them de-interleaved and transposed to [E, f, d] (ne {d, f, E}), biases [E, f]; down_proj [E, f, d] -> [E, d, f]."""
    gu, gub = sd[moe + "experts.gate_up_proj"], sd[moe + "experts.gate_up_proj_bias"]
    gate, up = gu[:, :, ::2].transpose(0, 2, 1), gu[:, :, 1::2].transpose(0, 2, 1)
    down = sd[moe + "experts.down_proj"].transpose(0, 2, 1)
    return gate, up, down, gub[:, ::2], gub[:, 1::2], sd[moe + "experts.down_proj_bias"]


def write_gguf_gpt_oss(path: Path, cfg, sd: dict, qtype=None):
    """gpt-oss the way convert_hf_to_gguf.py GptOssModel writes it; qtype=MXFP4 stores the expert matrices as the
    distributed gpt-oss GGUFs do (everything else F32 here)."""
    a = "gpt-oss"
    w = gguf.GGUFWriter(str(path), a)
    w.add_name(path.stem)
    L, d, V = cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size
    H, Hkv, hd, E, f = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.num_local_experts,
                        cfg.intermediate_size)
    rp = cfg.rope_parameters
    w.add_block_count(L)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(d)
    w.add_feed_forward_length(f)
    w.add_expert_feed_forward_length(f)
    w.add_head_count(H)
    w.add_head_count_kv(Hkv)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(float(rp["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_vocab_size(V)
    w.add_uint32(f"{a}.attention.sliding_window", cfg.sliding_window)
    w.add_string(f"{a}.rope.scaling.type", "yarn")
    w.add_float32(f"{a}.rope.scaling.factor", float(rp["factor"]))
    w.add_uint32(f"{a}.rope.scaling.original_context_length", int(rp["original_max_position_embeddings"]))
    w.add_expert_count(E)
    w.add_expert_used_count(cfg.num_experts_per_tok)

    def t(name, arr, q=None):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if q is not None and arr.shape[-1] % gguf.GGML_QUANT_SIZES[q][0] == 0:
            w.add_tensor(name, quantize(arr, q), raw_dtype=q)
        else:
            w.add_tensor(name, arr)
    t("token_embd.weight", sd["model.embed_tokens.weight"])
    t("output_norm.weight", sd["model.norm.weight"])
    t("output.weight", sd["lm_head.weight"])
    for il in range(L):
        p, b = f"model.layers.{il}.", f"blk.{il}."
        t(b + "attn_norm.weight", sd[p + "input_layernorm.weight"])
        for proj in ("q", "k", "v"):
            t(b + f"attn_{proj}.weight", sd[p + f"self_attn.{proj}_proj.weight"])
            t(b + f"attn_{proj}.bias", sd[p + f"self_attn.{proj}_proj.bias"])
        t(b + "attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        t(b + "attn_output.bias", sd[p + "self_attn.o_proj.bias"])
        t(b + "attn_sinks.weight", sd[p + "self_attn.sinks"])
        t(b + "post_attention_norm.weight", sd[p + "post_attention_layernorm.weight"])
        moe = p + "mlp."
        t(b + "ffn_gate_inp.weight", sd[moe + "router.weight"])
        t(b + "ffn_gate_inp.bias", sd[moe + "router.bias"])
        gate, up, down, gate_b, up_b, down_b = gpt_oss_experts(sd, moe)
        t(b + "ffn_gate_exps.weight", gate, qtype)
        t(b + "ffn_up_exps.weight", up, qtype)
        t(b + "ffn_down_exps.weight", down, qtype)
        t(b + "ffn_gate_exps.bias", gate_b)
        t(b + "ffn_up_exps.bias", up_b)
        t(b + "ffn_down_exps.bias", down_b)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def build(name: str):
    torch.manual_seed(SEED)
    common = dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=256, rms_norm_eps=1e-5, initializer_range=0.15, tie_word_embeddings=False,
                  num_experts_per_tok=2)
    if name == "mixtral":
        cfg = transformers.MixtralConfig(intermediate_size=16, num_local_experts=4, rope_theta=10000.0, **common)
        model = transformers.MixtralForCausalLM(cfg)
        arch = "llama"
    elif name == "qwen3moe":
        cfg = transformers.Qwen3MoeConfig(intermediate_size=48, moe_intermediate_size=8, num_experts=8,
                                          norm_topk_prob=True, head_dim=16, rope_theta=10000.0,
                                          decoder_sparse_step=1, mlp_only_layers=[], **common)
        model = transformers.Qwen3MoeForCausalLM(cfg)
        arch = "qwen3moe"
    elif name == "qwen2moe":
        # Smaller (fixtures stay under 1.5 MB): width 32, vocab 64; raw top-k weights plus the gated shared expert.
        common.update(vocab_size=64, hidden_size=32)
        cfg = transformers.Qwen2MoeConfig(intermediate_size=48, moe_intermediate_size=8,
                                          shared_expert_intermediate_size=16, num_experts=4, norm_topk_prob=False,
                                          qkv_bias=True, rope_theta=10000.0, decoder_sparse_step=1, mlp_only_layers=[],
                                          bos_token_id=1, eos_token_id=2, pad_token_id=None, **common)
        model = transformers.Qwen2MoeForCausalLM(cfg)
        arch = "qwen2moe"
    elif name == "olmoe":
        # Smaller (fixtures stay under 1.5 MB): width 32, vocab 64; raw (not renormalised) top-k weights.
        common.update(vocab_size=64, hidden_size=32)
        cfg = transformers.OlmoeConfig(intermediate_size=16, num_experts=4, norm_topk_prob=False, rope_theta=10000.0,
                                       bos_token_id=1, eos_token_id=2, pad_token_id=None, **common)
        model = transformers.OlmoeForCausalLM(cfg)
        arch = "olmoe"
    elif name == "deepseek2":
        # DeepSeek-V2-Lite in miniature: MLA without q_lora, one dense lead layer, a shared expert, softmax gating
        # without renormalisation, a routed scaling factor (1.5 here, so it cannot be forgotten) and YaRN RoPE with
        # V2-Lite's mscale = mscale_all_dim (the attention scale gets mscale^2, the cos/sin factor stays 1).
        common.update(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_key_value_heads=4)
        rope = dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=64,
                    beta_fast=32.0, beta_slow=1.0, mscale=0.707, mscale_all_dim=0.707)
        cfg = transformers.DeepseekV2Config(intermediate_size=48, moe_intermediate_size=8, n_shared_experts=1,
                                            n_routed_experts=4, routed_scaling_factor=1.5, kv_lora_rank=16,
                                            q_lora_rank=None, qk_rope_head_dim=8, v_head_dim=8, qk_nope_head_dim=8,
                                            topk_method="greedy", n_group=1, topk_group=1, first_k_dense_replace=1,
                                            norm_topk_prob=False, rope_parameters=rope, bos_token_id=1,
                                            eos_token_id=2, pad_token_id=None, **common)
        model = transformers.DeepseekV2ForCausalLM(cfg)
        arch = "deepseek2"
    elif name == "gpt-oss":
        # gpt-oss in miniature: q/k/v/o biases, attention sinks, sliding-window attention on even layers (window 4, so
        # the 7- and 8-token prompts cross it), YaRN RoPE as gpt-oss-20b has it, router bias, softmax over the
        # selected logits, expert biases and the clamped SwiGLU (alpha 1.702, limit 7).
        common.update(vocab_size=64, hidden_size=32)
        rope = dict(rope_type="yarn", rope_theta=150000.0, factor=32.0, original_max_position_embeddings=4096,
                    beta_fast=32.0, beta_slow=1.0, truncate=False)
        common.update(max_position_embeddings=131072)
        cfg = transformers.GptOssConfig(intermediate_size=32, num_local_experts=4, head_dim=8, sliding_window=4,
                                        layer_types=["sliding_attention", "full_attention"], rope_parameters=rope,
                                        bos_token_id=1, eos_token_id=2, pad_token_id=None, **common)
        model = transformers.GptOssForCausalLM(cfg)
        arch = "gpt-oss"
    else:
        raise ValueError(name)
    model = model.float().eval()
    # Norm weights start at exactly 1: perturb them so a missing or misplaced norm cannot go unnoticed. A matrix
    # left at zero by the modelling code's init (OLMoE's router) would make every routing a tie: draw it too.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight") or "layernorm" in n:
                p.add_(torch.randn_like(p) * 0.1)
            elif not p.any():  # OLMoE's router, zero-initialised biases
                p.normal_(0.0, cfg.initializer_range)
    return model, cfg, arch


def prompts_for(cfg):
    return [[t % cfg.vocab_size for t in p] for p in PROMPTS]


def run_prompts(model, cfg):
    """Logits (n_tok, n_vocab) per prompt, and the smallest gap between the k-th and (k+1)-th selection score over
    every token and layer: selection must be unambiguous for a reference to be meaningful. The score is the softmax
    probability for the softmax-gated models, the router logit for gpt-oss (it selects on logits); the router input
    is captured with a hook so the same code serves models that do not return router logits."""
    k = cfg.num_experts_per_tok
    routers = [m for n, m in model.named_modules() if n.endswith(("mlp.gate", "mlp.router", "block_sparse_moe.gate"))]
    captured = []
    hooks = [r.register_forward_hook(lambda mod, inp, out: captured.append((mod, inp[0].detach()))) for r in routers]
    min_gap, out = float("inf"), []
    with torch.no_grad():
        for prompt in prompts_for(cfg):
            captured.clear()
            res = model(torch.tensor([prompt]), use_cache=False)
            out.append(res.logits[0].float().numpy())
            for mod, x in captured:
                logits = x.reshape(-1, x.shape[-1]).float() @ mod.weight.float().T
                if getattr(mod, "bias", None) is not None:
                    logits = logits + mod.bias.float()
                score = logits if isinstance(cfg, transformers.GptOssConfig) else torch.softmax(logits, dim=-1)
                s_ = torch.sort(score, dim=-1, descending=True).values
                min_gap = min(min_gap, float((s_[:, k - 1] - s_[:, k]).min()))
    for h in hooks:
        h.remove()
    return out, min_gap


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests/fixtures/ref"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta, blobs, offset = [], [], 0
    for name in ("mixtral", "qwen3moe", "olmoe", "qwen2moe", "deepseek2", "gpt-oss"):
        model, cfg, arch = build(name)
        hf_dir = out / f"{name}-hf"
        if hf_dir.exists():
            shutil.rmtree(hf_dir)
        # qwen2moe is committed as GGUF only: its safetensors copy would take the fixtures past 1.5 MB.
        with_hf = name != "qwen2moe"
        if with_hf:
            model.save_pretrained(hf_dir, safe_serialization=True)
            for fpath in hf_dir.iterdir():
                fpath.chmod(0o644)  # save_pretrained may write 0600; the fixtures are committed world-readable
        for extra in ("generation_config.json",):
            if with_hf:
                (hf_dir / extra).unlink(missing_ok=True)
        sd = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        gguf_path = out / f"{name}-f32.gguf"
        extra_files = {}
        if arch == "deepseek2":
            write_gguf_deepseek2(gguf_path, cfg, sd, mla=True)
            legacy = out / f"{name}-legacy-f32.gguf"  # attn_kv_b unsplit: the same weights, the same reference
            write_gguf_deepseek2(legacy, cfg, sd, mla=False)
            extra_files["gguf_legacy"] = legacy.name
        elif arch == "gpt-oss":
            write_gguf_gpt_oss(gguf_path, cfg, sd)
        else:
            write_gguf(gguf_path, arch, cfg, sd)
        q8_path = None
        if name == "mixtral":
            # A quantized variant of the same weights (its reference logits are computed below).
            q8_path = out / f"{name}-q8_0.gguf"
            write_gguf(q8_path, arch, cfg, sd, gguf.GGMLQuantizationType.Q8_0)

        logits_all, min_gap = run_prompts(model, cfg)
        entry = dict(name=name, arch=arch, gguf=gguf_path.name, hf=hf_dir.name if with_hf else None, n_vocab=cfg.vocab_size,
                     prompts=prompts_for(cfg), logits_offset=offset, min_topk_gap=min_gap,
                     transformers=transformers.__version__, torch=torch.__version__, **extra_files)
        for l in logits_all:
            blobs.append(np.ascontiguousarray(l, dtype="<f4").tobytes())
            offset += l.size
        if q8_path:
            # Reference for the quantized file: transformers on the weights the file really holds (each quantized
            # matrix replaced by dequantize(quantize(w)); a row permutation commutes with per-row blocks).
            with torch.no_grad():
                for n, prm in model.named_parameters():
                    a = prm.detach().numpy()
                    if a.ndim >= 2 and not n.endswith(".gate.weight") and a.shape[-1] % 32 == 0:
                        q = quantize(np.ascontiguousarray(a), gguf.GGMLQuantizationType.Q8_0)
                        prm.copy_(torch.from_numpy(dequantize(q, gguf.GGMLQuantizationType.Q8_0).reshape(a.shape)))
            q_logits, q_gap = run_prompts(model, cfg)
            entry.update(gguf_q8_0=q8_path.name, q8_0_logits_offset=offset, q8_0_min_topk_gap=q_gap)
            for l in q_logits:
                blobs.append(np.ascontiguousarray(l, dtype="<f4").tobytes())
                offset += l.size
        if arch == "gpt-oss":
            # The expert matrices as MXFP4 (what the distributed gpt-oss GGUFs hold); reference: transformers on the
            # dequantized expert weights (the interleaved HF layout is rebuilt from the de-interleaved rows).
            mx = gguf.GGMLQuantizationType.MXFP4
            mx_path = out / f"{name}-mxfp4.gguf"
            write_gguf_gpt_oss(mx_path, cfg, sd, mx)
            rt = lambda a: dequantize(quantize(np.ascontiguousarray(a, dtype=np.float32), mx), mx).reshape(a.shape)
            with torch.no_grad():
                for il in range(cfg.num_hidden_layers):
                    ex = model.model.layers[il].mlp.experts
                    gu = ex.gate_up_proj.detach().numpy()  # [E, d, 2f]
                    gate, up = rt(gu[:, :, ::2].transpose(0, 2, 1)), rt(gu[:, :, 1::2].transpose(0, 2, 1))
                    new = np.empty_like(gu)
                    new[:, :, ::2], new[:, :, 1::2] = gate.transpose(0, 2, 1), up.transpose(0, 2, 1)
                    ex.gate_up_proj.copy_(torch.from_numpy(new))
                    down = ex.down_proj.detach().numpy()  # [E, f, d]
                    ex.down_proj.copy_(torch.from_numpy(rt(down.transpose(0, 2, 1)).transpose(0, 2, 1).copy()))
            m_logits, m_gap = run_prompts(model, cfg)
            entry.update(gguf_mxfp4=mx_path.name, mxfp4_logits_offset=offset, mxfp4_min_topk_gap=m_gap)
            for l in m_logits:
                blobs.append(np.ascontiguousarray(l, dtype="<f4").tobytes())
                offset += l.size
        meta.append(entry)
        print(f"{name}: gguf {gguf_path.stat().st_size} B, min top-k gap {min_gap:.3g}")
    (out / "ref.bin").write_bytes(b"".join(blobs))
    (out / "ref.json").write_text(json.dumps({"models": meta}, indent=1) + "\n")


if __name__ == "__main__":
    main()
