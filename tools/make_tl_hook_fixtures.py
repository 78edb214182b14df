"""TransformerLens reference values for icl-probe's hooks that TL defines beyond the residual stream.

Writes `crates/icl-probe/tests/fixtures/<model>/tl_hooks.safetensors` for the tiny random HF models
(llama_tiny, qwen2_tiny, gpt2_tiny, gptneox_tiny, gemma3_tiny), checked by `tests/tl_hooks.rs`.

Made with TransformerLens 4.3.0 (`TransformerBridge.boot_transformers` around the HF model, eager
attention, raw weights: no LayerNorm folding, no centring, `use_attn_result` on), transformers 5.24,
torch 2.15 CPU, float32. Run with TL importable, e.g.
    pip install --target /tmp/tlpkgs --no-deps transformer-lens==4.3.0 beartype einops fancy-einsum \
        jaxtyping wadler-lindig typeguard pandas protobuf transformers-stream-generator datasets wandb ...
    PYTHONPATH=/tmp/tlpkgs python tools/make_tl_hook_fixtures.py

Contents (input: `input_ids` [2, 12] of the model's expected.safetensors):
- `cache.<hook>` for layers 0 and last: `ln1.hook_scale`, `ln2.hook_scale` ([B, T, 1]),
  `attn.hook_rot_q` / `attn.hook_rot_k` (rotary models; [B, T, H(kv), d_head]), `attn.hook_result`
  ([B, T, H, d_model]), `mlp.hook_pre`, `mlp.hook_pre_linear` (gated MLPs), `mlp.hook_post`,
  Gemma's `ln1_post.hook_scale` / `ln2_post.hook_scale`; and `ln_final.hook_scale`.
- `logits`: the unpatched logits [B, 4, V] (last 4 positions); `patch.<name>`: logits with one TL forward hook overwriting an
  activation (see PATCHES below), so the Rust interventions are checked against TL's own hooks.
"""

import sys
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

warnings.filterwarnings("ignore")
from transformer_lens.model_bridge import TransformerBridge  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent / "crates/icl-probe/tests/fixtures"
# Logits are kept for the last TAIL positions only (every patch is at position 5 of 12 or
# everywhere, or inside the tail, so they all show there), which keeps each file small.
TAIL = 4
MODELS = ["llama_tiny", "qwen2_tiny", "gpt2_tiny", "gptneox_tiny", "gemma3_tiny"]


def patches(n_layers, rotary):
    """(name, hook, function of the activation) — each an in-place-free overwrite."""
    last = n_layers - 1

    def zero_head1(x, hook):
        x = x.clone()
        x[:, :, 1, :] = 0.0
        return x

    def double_pos5(x, hook):
        x = x.clone()
        x[:, 5, :] = x[:, 5, :] * 2.0
        return x

    def zero_pos9(x, hook):
        # Inside the kept tail: the last block's MLP touches no other position.
        x = x.clone()
        x[:, 9, :] = 0.0
        return x

    def half_head0(x, hook):
        x = x.clone()
        x[:, :, 0, :] = x[:, :, 0, :] * 0.5
        return x

    def triple(x, hook):
        return x * 3.0

    p = [
        ("result", "blocks.0.attn.hook_result", zero_head1),
        ("ln2_scale", "blocks.0.ln2.hook_scale", double_pos5),
        ("ln1_scale", f"blocks.{last}.ln1.hook_scale", double_pos5),
        ("mlp_pre", f"blocks.{last}.mlp.hook_pre", zero_pos9),
        ("ln_final_scale", "ln_final.hook_scale", triple),
    ]
    if rotary:
        p.append(("rot_q", "blocks.0.attn.hook_rot_q", half_head0))
        p.append(("rot_k", "blocks.0.attn.hook_rot_k", half_head0))
    return p


def main():
    for name in sys.argv[1:] or MODELS:
        # A fresh tokenizer per model: booting a bridge rewrites the one it is given.
        tok = PreTrainedTokenizerFast(tokenizer_file=str(ROOT / "tokenizer_bpe_tiny.json"))
        d = ROOT / name
        hf = AutoModelForCausalLM.from_pretrained(
            d, attn_implementation="eager", torch_dtype=torch.float32
        ).eval()
        br = TransformerBridge.boot_transformers(str(d), hf_model=hf, tokenizer=tok)
        br.set_use_attn_result(True)
        ids = load_file(str(d / "expected.safetensors"))["input_ids"].long()
        n_layers = hf.config.num_hidden_layers
        with torch.no_grad():
            logits, cache = br.run_with_cache(ids)
        rotary = any(k.endswith("attn.hook_rot_q") for k in cache.keys())
        out = {"input_ids": ids, "logits": logits[:, -TAIL:].float().contiguous()}
        wanted = [
            "ln1.hook_scale",
            "ln2.hook_scale",
            "ln1_post.hook_scale",
            "ln2_post.hook_scale",
            "attn.hook_rot_q",
            "attn.hook_rot_k",
            "attn.hook_result",
            "mlp.hook_pre",
            "mlp.hook_pre_linear",
            "mlp.hook_post",
        ]
        for layer in sorted({0, n_layers - 1}):
            for w in wanted:
                k = f"blocks.{layer}.{w}"
                if k in cache.keys():
                    out[f"cache.{k}"] = cache[k].float().contiguous()
        out["cache.ln_final.hook_scale"] = cache["ln_final.hook_scale"].float().contiguous()
        for pname, hook, fn in patches(n_layers, rotary):
            with torch.no_grad():
                pl = br.run_with_hooks(ids, fwd_hooks=[(hook, fn)])
            diff = (pl - logits).abs().max().item()
            assert diff > 1e-3, f"{name}: patch {pname} at {hook} changed nothing ({diff})"
            out[f"patch.{pname}"] = pl[:, -TAIL:].float().contiguous()
        save_file(out, str(d / "tl_hooks.safetensors"))
        print(name, "rotary" if rotary else "", sorted(k for k in out if k.startswith("cache.")))


if __name__ == "__main__":
    main()
