#!/usr/bin/env python3
"""Reference next-token logits of the real GGUF models on real ICL prompts, for
crates/icl-probe/tests/real_models.rs.

For each model, Hugging Face transformers loads the GGUF file (every tensor dequantised to float32 by
the `gguf` package: the same numbers icl-probe's loader gets), tokenises each prompt of
crates/icl-probe/tests/fixtures/real_models/prompts.json with the tokenizer transformers builds from
the GGUF metadata (`tokenizer(text)`, special tokens as transformers adds them), runs every prompt on
its own (no padding), and records, at the last position:
  - the token ids (so the Rust test does not depend on the Rust tokenizer),
  - the top-1 id and its logit, and the top-20 (id, logit) pairs,
  - the target id (first token of " " + output, no special tokens) and whether top-1 hits it.
It also records the load time and the process's peak RSS (each model runs in its own subprocess).

Output: crates/icl-probe/tests/fixtures/real_models/<asset>.json, one per model (~100 kB).

The prompts themselves come from the project's task builders:
    cargo run --release -p bench-cli -- icl-prompts \\
        --out crates/icl-probe/tests/fixtures/real_models/prompts.json

Usage (from the repository root, with the venv of torch, transformers, gguf):
    /work/venv/bin/python tools/real_model_reference.py                      # all four models
    /work/venv/bin/python tools/real_model_reference.py --only gemma-3-270m-q4km
Model files are found in the asset cache (`assets path NAME`), else as $ICLGDD_MODEL_DIR/NAME.gguf
(default /work/models), else under the scratch names listed in SCRATCH.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

FIXTURES = "crates/icl-probe/tests/fixtures/real_models"
MODELS = [
    "smollm2-135m-gguf",
    "qwen2.5-coder-0.5b-q4km",
    "qwen2.5-coder-1.5b-q4km",
    "gemma-3-270m-q4km",
]
# Where the lead put the files before the assets crate knew them.
SCRATCH = {
    "qwen2.5-coder-0.5b-q4km": "qwen2.5-coder-0.5b-q4km.gguf",
    "qwen2.5-coder-1.5b-q4km": "qwen2.5-coder-1.5b-q4km.gguf",
    "gemma-3-270m-q4km": "gemma-3-270m-q4km.gguf",
}
TOP_K = 20


def model_path(name):
    """The asset cache first (as the Rust test; the built `assets` binary, else `cargo run`), then
    $ICLGDD_MODEL_DIR."""
    built = os.path.join("target", "release", "assets")
    cmd = [built] if os.access(built, os.X_OK) else ["cargo", "run", "--release", "-q", "-p", "assets-cli", "--"]
    try:
        out = subprocess.run([*cmd, "path", name], capture_output=True, text=True, check=False)
        p = out.stdout.strip()
        if out.returncode == 0 and p and os.path.isfile(p):
            return p
    except OSError:
        pass
    d = os.environ.get("ICLGDD_MODEL_DIR", "/work/models")
    for fname in (f"{name}.gguf", SCRATCH.get(name, "")):
        p = os.path.join(d, fname)
        if fname and os.path.isfile(p):
            return p
    return None


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(name, path, out_path, threads):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    with open(os.path.join(FIXTURES, "prompts.json")) as f:
        prompts = json.load(f)

    # from_pretrained wants a folder and a file name in it.
    tmp = tempfile.mkdtemp(prefix="gguf-ref-")
    fname = os.path.basename(path) if path.endswith(".gguf") else "model.gguf"
    os.symlink(os.path.abspath(path), os.path.join(tmp, fname))

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(tmp, gguf_file=fname)
    model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=fname, dtype=torch.float32)
    model.eval()
    load_s = time.perf_counter() - t0
    rss_after_load = peak_rss_mb()

    records = []
    hits = 0
    t0 = time.perf_counter()
    n_tokens = 0
    with torch.no_grad():
        for p in prompts["prompts"]:
            ids = tok(p["text"])["input_ids"]
            n_tokens += len(ids)
            out = model(input_ids=torch.tensor([ids]), use_cache=False)
            last = out.logits[0, -1].float()
            vals, idx = torch.topk(last, TOP_K)
            target = tok(" " + p["output"], add_special_tokens=False)["input_ids"][0]
            top1 = int(idx[0])
            hits += top1 == target
            records.append({
                "task": p["task"],
                "ids": ids,
                "top1": top1,
                "top1_logit": float(vals[0]),
                "top20": [[int(i), float(v)] for i, v in zip(idx, vals)],
                "target": target,
                "target_logit": float(last[target]),
            })
    fwd_s = time.perf_counter() - t0

    cfg = model.config
    result = {
        "asset": name,
        "gguf": os.path.basename(path),
        "made_by": "tools/real_model_reference.py: transformers from the GGUF, dequantised to float32, "
                   "one prompt per forward (no padding), last-position logits",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "threads": threads,
        "model_type": cfg.model_type,
        "vocab_size": int(last.shape[0]),
        "bos_token_id": tok.bos_token_id,
        "pad_token_id": tok.pad_token_id,
        "load_s": round(load_s, 2),
        "peak_rss_mb_after_load": round(rss_after_load),
        "peak_rss_mb": round(peak_rss_mb()),
        "forward_s": round(fwd_s, 2),
        "forward_tokens": n_tokens,
        "accuracy": hits / len(records),
        "machine": platform.processor() or platform.machine(),
        "prompts": records,
    }
    with open(out_path, "w") as f:
        json.dump(result, f, separators=(",", ":"))
        f.write("\n")
    acc_by_task = {}
    for r in records:
        a = acc_by_task.setdefault(r["task"], [0, 0])
        a[0] += r["top1"] == r["target"]
        a[1] += 1
    print(f"{name}: load {load_s:.1f} s, peak RSS {result['peak_rss_mb']} MB, forward "
          f"{n_tokens} tokens in {fwd_s:.1f} s, accuracy {result['accuracy']:.2f} "
          f"({', '.join(f'{t} {a}/{n}' for t, (a, n) in acc_by_task.items())}) -> {out_path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", help="asset name (repeatable); default: all four")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", nargs=2, metavar=("NAME", "PATH"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        name, path = a.child
        run_one(name, path, os.path.join(FIXTURES, f"{name}.json"), a.threads)
        return
    failed = []
    for name in a.only or MODELS:
        path = model_path(name)
        if path is None:
            print(f"{name}: no GGUF found (asset cache or $ICLGDD_MODEL_DIR), skipped")
            continue
        # One process per model: its peak RSS is that model's, not the largest so far.
        rc = subprocess.run([sys.executable, __file__, "--threads", str(a.threads), "--child", name, path]).returncode
        if rc != 0:
            failed.append(name)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
