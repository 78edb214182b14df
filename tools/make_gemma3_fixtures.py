#!/usr/bin/env python3
"""Gemma 3 fixtures for crates/icl-probe/tests/gemma3.rs.

Two parts (env: torch 2.15 CPU, transformers 5.24, gguf 0.19, numpy; float32 throughout):

`tiny` -> crates/icl-probe/tests/fixtures/gemma3_tiny/
    A random-weight Gemma3ForCausalLM (gemma3_text): vocab 512, d_model 48, 6 layers, 4 query /
    2 key-value heads, head_dim 16 (not d_model / heads), d_mlp 96, sliding window 4 (shorter than
    the 12-token test rows), the default 5 local : 1 global layer pattern (layer 5 global), global
    RoPE base 1e6 with linear scaling x8 (as the 4B+ models), local base 1e4, tied embeddings.
    Every parameter, norms included, is drawn at random (HF initialises the norms to 0, i.e. to a
    multiplier of 1, which would hide a missing `1 +`).
    - config.json, model.safetensors: `save_pretrained` (the HF-folder path).
    - model.gguf: the same weights written the way llama.cpp's converter writes a gemma3 GGUF
      (llama.cpp tensor names, norm weights stored as 1 + w, F32, no Q/K permutation, gemma3.*
      metadata: no query_pre_attn_scalar and no layer pattern, as in real files).
    - expected.safetensors (eager attention, no padding):
        input_ids [2,12]; logits [2,12,512];
        hidden_states.{0..6}: i < 6 is the input of layer i (0 = embeddings x sqrt(48), the
        others the output of layer i-1), 6 is the final norm's output (what lm_head reads);
        attn_z.{0,5} [2,12,4*16]: input of o_proj (heads concatenated), layer 0 local, 5 global;
        pattern.{0,5} [2,4,12,12]: attention probabilities;
        q_norm.0 [2,12,4,16], k_norm.0 [2,12,2,16]: q/k after their RMSNorm, before rotary;
        patch_vector [48], patched_logits: logits when layer 0's output at position 5 (every row)
        is replaced by patch_vector.
        logits_final_softcap_2: logits with final_logit_softcapping = 2.0 set in the config.

`real` -> crates/icl-probe/tests/fixtures/gemma3_gguf/
    transformers' own GGUF loader on gemma-3-270m-q4km (every tensor dequantised to float32 by the
    gguf package; norms stored 1 + w, transformers subtracts 1 and its RMSNorm adds it back),
    tokenizer built from the GGUF metadata, on a few real ICL prompts and one prompt longer than the
    512-token window (so local layers drop keys). Per prompt k, at the LAST position only:
        promptK.input_ids [T] (int64), promptK.top20_ids / top20_logits, promptK.resid.{i}
        [640] for i in RESID_LAYERS (same numbering as hidden_states above).
    expected.json: prompts, decoded top-5, the model's config as transformers read it.

Usage (repository root):
    /work/venv/bin/python tools/make_gemma3_fixtures.py tiny
    /work/venv/bin/python tools/make_gemma3_fixtures.py real [--gguf PATH]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

FIX = "crates/icl-probe/tests/fixtures"
RESID_LAYERS = [0, 1, 5, 6, 12, 17, 18]


def record(model, n_layers):
    """Forward hooks collecting the embeddings, each layer's input, the final norm's output,
    each attention's o_proj input and q/k norm outputs."""
    store = {}
    hooks = []
    inner = model.model
    hooks.append(inner.embed_tokens.register_forward_hook(lambda m, i, o: store.__setitem__("hs0", o)))
    for l, layer in enumerate(inner.layers):
        if l > 0:
            hooks.append(layer.register_forward_pre_hook(
                lambda m, args, kwargs, l=l: store.__setitem__(f"hs{l}", args[0] if args else kwargs["hidden_states"]),
                with_kwargs=True))
        hooks.append(layer.self_attn.o_proj.register_forward_pre_hook(
            lambda m, args, l=l: store.__setitem__(f"z{l}", args[0])))
        hooks.append(layer.self_attn.q_norm.register_forward_hook(
            lambda m, i, o, l=l: store.__setitem__(f"qn{l}", o)))
        hooks.append(layer.self_attn.k_norm.register_forward_hook(
            lambda m, i, o, l=l: store.__setitem__(f"kn{l}", o)))
    hooks.append(inner.norm.register_forward_hook(lambda m, i, o: store.__setitem__(f"hs{n_layers}", o)))
    return store, hooks


def tiny():
    from safetensors.torch import save_file
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    import gguf

    torch.manual_seed(0)
    out = os.path.join(FIX, "gemma3_tiny")
    os.makedirs(out, exist_ok=True)
    cfg = Gemma3TextConfig(
        vocab_size=512, hidden_size=48, intermediate_size=96, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
        max_position_embeddings=64, rms_norm_eps=1e-6, sliding_window=4,
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
        tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=1,
        attn_implementation="eager",
    )
    model = Gemma3ForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn_like(p) * 0.3)
            elif "embed_tokens" in name:
                p.copy_(torch.randn_like(p) * 0.1)
            else:
                p.copy_(torch.randn_like(p) * 0.08)
    print("layer types:", cfg.layer_types)
    assert cfg.layer_types == ["sliding_attention"] * 5 + ["full_attention"]
    model.save_pretrained(out, safe_serialization=True)
    os.remove(os.path.join(out, "generation_config.json"))  # not read by icl-probe

    n = cfg.num_hidden_layers
    ids = torch.randint(3, 512, (2, 12))
    store, hooks = record(model, n)
    with torch.no_grad():
        res = model(input_ids=ids, output_attentions=True)
    for h in hooks:
        h.remove()
    exp = {"input_ids": ids.to(torch.int64), "logits": res.logits.float()}
    for i in range(n + 1):
        exp[f"hidden_states.{i}"] = store[f"hs{i}"].float()
    for l in (0, 5):
        exp[f"attn_z.{l}"] = store[f"z{l}"].float()
        exp[f"pattern.{l}"] = res.attentions[l].float()
    # q/k norm outputs are [B, H, T, dh] in HF; the hooks give [B, T, H, dh].
    exp["q_norm.0"] = store["qn0"].transpose(1, 2).float()
    exp["k_norm.0"] = store["kn0"].transpose(1, 2).float()
    # The window must matter: a local layer's pattern is zero for keys >= 4 behind the query.
    p0 = res.attentions[0]
    assert float(p0[0, 0, 11, :8].abs().max()) == 0.0 and float(p0[0, 0, 11, 8]) > 0
    assert float(res.attentions[5][0, 0, 11, 0]) > 0

    patch = torch.randn(cfg.hidden_size) * 0.5

    def patch_hook(m, i, o):
        h = o[0] if isinstance(o, tuple) else o
        h = h.clone()
        h[:, 5, :] = patch
        return (h,) + tuple(o[1:]) if isinstance(o, tuple) else h

    hk = model.model.layers[0].register_forward_hook(patch_hook)
    with torch.no_grad():
        patched = model(input_ids=ids).logits
    hk.remove()
    exp["patch_vector"] = patch.float()
    exp["patched_logits"] = patched.float()
    # Gemma 3 checkpoints leave final_logit_softcapping unset; transformers applies it when set.
    model.config.final_logit_softcapping = 2.0
    with torch.no_grad():
        exp["logits_final_softcap_2"] = model(input_ids=ids).logits.float()
    model.config.final_logit_softcapping = None
    save_file({k: v.contiguous() for k, v in exp.items()}, os.path.join(out, "expected.safetensors"))

    # The same weights as llama.cpp's converter writes them.
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w = gguf.GGUFWriter(os.path.join(out, "model.gguf"), "gemma3")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(n)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(1_000_000.0)
    w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    w.add_rope_scaling_factor(8.0)
    w.add_sliding_window(cfg.sliding_window)
    names = {
        "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
        "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
        "post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
        "post_feedforward_layernorm": "post_ffw_norm", "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    }

    def put(name, arr, is_norm):
        arr = (arr + 1.0).astype(np.float32) if is_norm else arr.astype(np.float32)
        w.add_tensor(name, np.ascontiguousarray(arr))

    put("token_embd.weight", sd["model.embed_tokens.weight"], False)
    put("output_norm.weight", sd["model.norm.weight"], True)
    for l in range(n):
        for hf, gg in names.items():
            put(f"blk.{l}.{gg}.weight", sd[f"model.layers.{l}.{hf}.weight"], "norm" in hf)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", out)


PROMPTS = [
    "France -> Paris\nJapan -> Tokyo\nItaly -> Rome\nSpain -> Madrid\nCanada ->",
    "hot -> cold\nbig -> small\nfast -> slow\nhigh -> low\nlight ->",
    "apple banana cherry -> apple\nred green blue -> red\ndog cat mouse -> dog\nsun moon star ->",
    "paris -> PARIS\nwater -> WATER\nhouse -> HOUSE\ngarden ->",
]


def long_prompt():
    """About 600 tokens of country -> capital lines: longer than the 512-token window."""
    pairs = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"),
             ("Germany", "Berlin"), ("Egypt", "Cairo"), ("Peru", "Lima"), ("Kenya", "Nairobi"),
             ("Norway", "Oslo"), ("Chile", "Santiago"), ("Greece", "Athens"), ("Cuba", "Havana")]
    lines = [f"{a} -> {b}" for _ in range(11) for a, b in pairs]
    return "\n".join(lines) + "\nPoland ->"


def real(path):
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = os.path.join(FIX, "gemma3_gguf")
    os.makedirs(out, exist_ok=True)
    d, f = os.path.split(os.path.abspath(path))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    cfg = model.config
    n = cfg.num_hidden_layers
    print(cfg)
    prompts = PROMPTS + [long_prompt()]
    exp, meta = {}, []
    for k, p in enumerate(prompts):
        ids = tok(p, return_tensors="pt").input_ids
        store, hooks = record(model, n)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1].float()
        for h in hooks:
            h.remove()
        top = torch.topk(logits, 20)
        exp[f"prompt{k}.input_ids"] = ids[0].to(torch.int64)
        exp[f"prompt{k}.top20_ids"] = top.indices.to(torch.int64)
        exp[f"prompt{k}.top20_logits"] = top.values
        for i in RESID_LAYERS:
            exp[f"prompt{k}.resid.{i}"] = store[f"hs{i}"][0, -1].float()
        dec = [tok.decode([int(t)]) for t in top.indices[:5]]
        print(k, ids.shape[1], dec)
        meta.append({"prompt": p, "n_tokens": int(ids.shape[1]), "top5_decoded": dec})
    save_file({k: v.contiguous() for k, v in exp.items()}, os.path.join(out, "expected.safetensors"))
    with open(os.path.join(out, "expected.json"), "w") as fh:
        json.dump({
            "model": "gemma-3-270m-q4km (gemma-3-270m-q4_k_m.gguf)",
            "transformers": __import__("transformers").__version__,
            "torch": torch.__version__,
            "dtype": "float32",
            "attn_implementation": "eager",
            "resid_layers": RESID_LAYERS,
            "layer_types": list(cfg.layer_types),
            "sliding_window": cfg.sliding_window,
            "query_pre_attn_scalar": cfg.query_pre_attn_scalar,
            "rope_parameters": cfg.rope_parameters,
            "prompts": meta,
        }, fh, indent=1)
    print("wrote", out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["tiny", "real"])
    ap.add_argument("--gguf", default=os.path.join(os.environ.get("ICLGDD_MODEL_DIR", "/work/models"),
                                                   "gemma-3-270m-q4km.gguf"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    if a.what == "tiny":
        tiny()
    else:
        real(a.gguf)


if __name__ == "__main__":
    sys.exit(main())
