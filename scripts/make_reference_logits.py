#!/usr/bin/env python3
"""Regenerates tests/fixtures/ref/: tiny random-weight MoE models (Mixtral, Qwen3-MoE, OLMoE, Qwen2-MoE) built with Hugging Face `transformers`, saved
both as safetensors (save_pretrained) and as GGUF (F32, written with the `gguf` package following llama.cpp's
convert_hf_to_gguf.py conventions), plus the reference logits transformers computes for fixed prompts.

The reference is transformers itself (the runtime is not its own oracle): the C++ forward pass must reproduce
ref.bin from either file format. GGUF conventions reproduced here (shared/reference/model-formats.md §3, §5):
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
    elif arch == "olmoe":  # the expert width is feed_forward_length (model-formats.md §3.2)
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
    """Logits (n_tok, n_vocab) per prompt, and the smallest gap between the k-th and (k+1)-th routing probability
    over every token and layer: selection must be unambiguous for a reference to be meaningful."""
    min_gap, out = float("inf"), []
    with torch.no_grad():
        for prompt in prompts_for(cfg):
            res = model(torch.tensor([prompt]), output_router_logits=True, use_cache=False)
            out.append(res.logits[0].float().numpy())
            for rl in res.router_logits:
                s = torch.sort(torch.softmax(rl.float(), dim=-1), dim=-1, descending=True).values
                k = cfg.num_experts_per_tok
                min_gap = min(min_gap, float((s[:, k - 1] - s[:, k]).min()))
    return out, min_gap


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests/fixtures/ref"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta, blobs, offset = [], [], 0
    for name in ("mixtral", "qwen3moe", "olmoe", "qwen2moe"):
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
        write_gguf(gguf_path, arch, cfg, sd)
        q8_path = None
        if name == "mixtral":
            # A quantized variant of the same weights (its reference logits are computed below).
            q8_path = out / f"{name}-q8_0.gguf"
            write_gguf(q8_path, arch, cfg, sd, gguf.GGMLQuantizationType.Q8_0)

        logits_all, min_gap = run_prompts(model, cfg)
        entry = dict(name=name, arch=arch, gguf=gguf_path.name, hf=hf_dir.name if with_hf else None, n_vocab=cfg.vocab_size,
                     prompts=prompts_for(cfg), logits_offset=offset, min_topk_gap=min_gap,
                     transformers=transformers.__version__, torch=torch.__version__)
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
        meta.append(entry)
        print(f"{name}: gguf {gguf_path.stat().st_size} B, min top-k gap {min_gap:.3g}")
    (out / "ref.bin").write_bytes(b"".join(blobs))
    (out / "ref.json").write_text(json.dumps({"models": meta}, indent=1) + "\n")


if __name__ == "__main__":
    main()
