#!/usr/bin/env python3
"""Prompt (prefill) speed of the real GGUF models, side by side in one sitting: icl-probe (through
`icl-gdd-bench prefill`), Hugging Face transformers (GGUF dequantised to float32) and llama.cpp
(llama-cpp-python, the quantised blocks as they are).

Every runtime gets the same job: one forward over the same `batch × tokens` token ids (Knuth's
multiplicative hash below the vocabulary size, the formula of bins/bench/src/prefill.rs), last-position
logits only, the same number of CPU threads. Each measurement is its own subprocess (load, warm-up
forward, `--runs` timed forwards, median), so its peak RSS (GNU time's %M) is that runtime's alone. The
subprocesses are interleaved rep-major - every model and runtime once per rep, the runtime order rotated
from rep to rep - so a burst of background load on a shared machine hits all of them alike. Reported: the
median over reps of each subprocess's median with the min and max, the largest peak RSS, and the 1-minute
load average seen during the run. `--f32-for ASSET` adds icl-probe with every matrix expanded to float32
(`ICLGDD_WEIGHTS=f32`) for that model, beside the default compact weights.

llama.cpp: `Llama(n_threads=T, n_threads_batch=T, n_batch=n_ubatch=tokens, logits_all=False)`, the
KV cache cleared before each timed `eval` of the ids (one decode call of all of them: llama.cpp's "prompt
eval"), timed by the wall clock around it. Batch > 1 is not run there (one sequence per context).

Usage (repository root; venv with torch, transformers, gguf, llama-cpp-python):
    cargo build --release -p bench-cli
    /work/venv/bin/python tools/prefill_side_by_side.py --f32-for qwen2.5-coder-1.5b-q4km \\
        --json-out /tmp/prefill.json --write-doc docs/performance.md
Writes the Markdown table to stdout and, with --write-doc, into the section
"Real GGUF models, prefill (CPU)" of that file (replacing the section if present).
"""
import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

MODELS = [
    "smollm2-135m-gguf",
    "qwen2.5-coder-0.5b-q4km",
    "qwen2.5-coder-1.5b-q4km",
    "gemma-3-270m-q4km",
]
SCRATCH = {
    "qwen2.5-coder-0.5b-q4km": "qwen2.5-coder-0.5b-q4km.gguf",
    "qwen2.5-coder-1.5b-q4km": "qwen2.5-coder-1.5b-q4km.gguf",
    "gemma-3-270m-q4km": "gemma-3-270m-q4km.gguf",
}
RUNTIMES = ["ours", "transformers", "llama.cpp"]  # plus "ours-f32" on request
SECTION = "## Real GGUF models, prefill (CPU)"


def prefill_ids(batch, tokens, vocab):
    """The ids of bins/bench/src/prefill.rs::prefill_ids."""
    return [[((r * tokens + i) * 2_654_435_761) % vocab for i in range(tokens)] for r in range(batch)]


def model_path(name, root):
    """The asset cache first (the built `assets` binary, else `cargo run`), then $ICLGDD_MODEL_DIR
    (default /work/models)."""
    built = os.path.join(root, "target", "release", "assets")
    cmd = [built] if os.access(built, os.X_OK) else ["cargo", "run", "--release", "-q", "-p", "assets-cli", "--"]
    out = subprocess.run([*cmd, "path", name], capture_output=True, text=True, check=False, cwd=root)
    p = out.stdout.strip()
    if out.returncode == 0 and p:
        if os.path.isdir(p):  # the asset's folder: its one .gguf
            ggufs = sorted(f for f in os.listdir(p) if f.endswith(".gguf"))
            p = os.path.join(p, ggufs[0]) if ggufs else ""
        if p and os.path.isfile(p):
            return p
    d = os.environ.get("ICLGDD_MODEL_DIR", "/work/models")
    for fname in (f"{name}.gguf", SCRATCH.get(name, "")):
        p = os.path.join(d, fname)
        if fname and os.path.isfile(p):
            return p
    return None


def gguf_vocab(path):
    """Rows of token_embd.weight (the logits' width, and what icl-probe takes as vocab_size)."""
    from gguf import GGUFReader

    r = GGUFReader(path)
    for t in r.tensors:
        if t.name == "token_embd.weight":
            return int(t.shape[1]) if len(t.shape) > 1 else int(t.shape[0])
    raise SystemExit(f"{path}: no token_embd.weight")


def timed(runs, warmup, f):
    for _ in range(warmup):
        f()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return times


# ---------------------------------------------------------------- workers (one per subprocess)

def worker_transformers(a):
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(a.threads)
    tmp = tempfile.mkdtemp(prefix="gguf-bench-")
    fname = os.path.basename(a.model)
    os.symlink(os.path.abspath(a.model), os.path.join(tmp, fname))
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=fname, dtype=torch.float32)
    model.eval()
    load_s = time.perf_counter() - t0
    ids = torch.tensor(prefill_ids(a.batch, a.tokens, a.vocab))
    kw = {"use_cache": False}
    try:  # only the last position's logits, as the others compute
        with torch.no_grad():
            model(input_ids=ids[:, :2], logits_to_keep=1, **kw)
        kw["logits_to_keep"] = 1
    except TypeError:
        pass

    def f():
        with torch.no_grad():
            return model(input_ids=ids, **kw).logits

    times = timed(a.runs, a.warmup, f)
    return {"load_s": load_s, "times": times, "version": __import__("transformers").__version__}


def worker_llama(a):
    import llama_cpp

    if a.batch != 1:
        raise SystemExit("llama.cpp: one sequence per context here; run with --batch 1")
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=a.model,
        n_ctx=max(512, a.tokens),
        n_batch=a.tokens,
        n_ubatch=a.tokens,
        n_threads=a.threads,
        n_threads_batch=a.threads,
        logits_all=False,
        verbose=False,
    )
    load_s = time.perf_counter() - t0
    if llm.n_vocab() < a.vocab:
        raise SystemExit(f"llama.cpp vocabulary {llm.n_vocab()} < {a.vocab}")
    ids = prefill_ids(1, a.tokens, a.vocab)[0]

    def f():
        llm.reset()  # n_tokens = 0: eval() then drops the whole KV cache before decoding
        llm.eval(ids)
        assert llm.n_tokens == len(ids)

    times = timed(a.runs, a.warmup, f)
    return {"load_s": load_s, "times": times, "version": llama_cpp.__version__}


# ---------------------------------------------------------------- driver

def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def run_measured(cmd, env, timeout):
    """Runs one measurement subprocess; returns (returncode, stdout, stderr, wall_s, peak_rss_mb).

    The peak RSS comes from `/usr/bin/time` (GNU time's %M): Linux carries a process's RSS high-water
    mark across fork and exec, so a child started straight from this driver would report at least the
    driver's own peak (the GGUF headers it read); `time` is a tiny process in between. Without it, the
    largest child so far (RUSAGE_CHILDREN), an upper bound."""
    timev = os.access("/usr/bin/time", os.X_OK)
    full = ["/usr/bin/time", "-f", "MAXRSS_KB=%M", *cmd] if timev else cmd
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    wall = time.perf_counter() - t0
    rss_kb = None
    if timev:
        lines = err.splitlines()
        for l in lines:
            if l.startswith("MAXRSS_KB="):
                rss_kb = int(l.split("=", 1)[1])
        err = "\n".join(l for l in lines if not l.startswith("MAXRSS_KB="))
    else:
        rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return proc.returncode, out, err, wall, rss_kb / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="interleaved subprocesses per runtime and model")
    ap.add_argument("--runs", type=int, default=3, help="timed forwards per subprocess (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--only", action="append", help="asset name (repeatable); default: all four")
    ap.add_argument("--runtimes", default=",".join(RUNTIMES),
                    help=f"comma-separated, of {', '.join(RUNTIMES + ['ours-f32'])}")
    ap.add_argument("--f32-for", action="append", default=[],
                    help="asset that also runs ours-f32 (ICLGDD_WEIGHTS=f32); repeatable")
    ap.add_argument("--bench", default="target/release/icl-gdd-bench")
    ap.add_argument("--timeout", type=int, default=1200)
    ap.add_argument("--write-doc", help="Markdown file whose section '" + SECTION[3:] + "' gets the table")
    ap.add_argument("--json-out", help="also write every raw measurement here")
    ap.add_argument("--worker", choices=["transformers", "llama.cpp"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.worker:
        res = (worker_transformers if a.worker == "transformers" else worker_llama)(a)
        res["median_s"] = statistics.median(res["times"])
        print(json.dumps(res))
        return

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    models = []
    for name in a.only or MODELS:
        path = model_path(name, root)
        if path is None:
            print(f"{name}: no GGUF found, skipped", file=sys.stderr)
            continue
        models.append((name, path, gguf_vocab(path)))

    def runtimes_for(name):
        rts = a.runtimes.split(",")
        if name in a.f32_for and "ours-f32" not in rts:
            rts.append("ours-f32")
        return rts

    def command(rt, path, vocab):
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
        if rt.startswith("ours"):
            env["ICLGDD_WEIGHTS"] = "f32" if rt == "ours-f32" else "compact"
            return env, [a.bench, "--runs", str(a.runs), "--warmup", str(a.warmup), "prefill", "--model", path,
                         "--tokens", str(a.tokens), "--batch", str(a.batch), "--threads", str(a.threads), "--json"]
        return env, [sys.executable, os.path.abspath(__file__), "--worker", rt, "--model", path,
                     "--vocab", str(vocab), "--tokens", str(a.tokens), "--batch", str(a.batch),
                     "--threads", str(a.threads), "--runs", str(a.runs), "--warmup", str(a.warmup)]

    # Rep-major: every model and runtime once per rep, the runtime order rotated each rep, so a burst of
    # background load lands on different runtimes and models each time.
    raw = {}
    loads = [loadavg()]
    for rep in range(a.reps):
        for name, path, vocab in models:
            rts = runtimes_for(name)
            k = rep % len(rts)
            for rt in rts[k:] + rts[:k]:
                env, cmd = command(rt, path, vocab)
                before = loadavg()
                rc, out, err, wall, rss = run_measured(cmd, env, a.timeout)
                entry = {"rep": rep, "wall_s": wall, "peak_rss_mb": rss, "load_before": before,
                         "load_after": loadavg()}
                loads.append(entry["load_after"])
                lines = [l for l in out.splitlines() if l.startswith("{")]
                if rc == 0 and lines:
                    r = json.loads(lines[-1])
                    if rt.startswith("ours") and r["vocab"] != vocab:
                        sys.exit(f"{name}: icl-probe vocab {r['vocab']} != GGUF token_embd rows {vocab}")
                    entry.update(r)
                else:
                    errs = [l for l in err.splitlines() if l.strip()]
                    entry["error"] = " / ".join(errs[-2:]) or f"exit {rc}"
                raw.setdefault(name, {}).setdefault(rt, []).append(entry)
                status = (f"{a.batch * a.tokens / entry['median_s']:.1f} tok/s, load {entry['load_s']:.1f} s"
                          if "median_s" in entry else f"FAILED: {entry['error'][:200]}")
                print(f"[rep {rep + 1}/{a.reps} {name}] {rt}: {status}, peak RSS {rss:.0f} MB "
                      f"({wall:.0f} s, load avg {before:.2f} -> {entry['load_after']:.2f})",
                      file=sys.stderr, flush=True)
                if a.json_out:
                    with open(a.json_out, "w") as f:
                        json.dump(raw, f, indent=1)

    table = render(raw, models, a, loads)
    print(table)
    if a.write_doc:
        write_section(a.write_doc, table)


def summary(entries, n_tok):
    ok = [e for e in entries if "median_s" in e]
    if not ok:
        return None
    tps = [n_tok / e["median_s"] for e in ok]
    return {
        "tps": statistics.median(tps),
        "tps_min": min(tps),
        "tps_max": max(tps),
        "load_s": statistics.median(e["load_s"] for e in ok),
        "peak_rss_mb": max(e["peak_rss_mb"] for e in ok),
        "weight_mib": ok[0].get("weight_mib"),
        "n": len(ok),
    }


def render(raw, models, a, loads):
    n_tok = a.batch * a.tokens
    rts = ["ours", "transformers", "llama.cpp"]
    lines = [
        "| model | ours tok/s | transformers f32 tok/s | llama.cpp tok/s | ours / transformers | ours / llama.cpp "
        "| load s (ours / tf / llama) | peak RSS MB (ours / tf / llama) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    f32_lines = []
    notes = []
    for name, _, _ in models:
        s = {rt: summary(raw.get(name, {}).get(rt, []), n_tok) for rt in rts + ["ours-f32"]}

        def cell(rt):
            if s[rt]:
                x = s[rt]
                return f"{x['tps']:.1f} ({x['tps_min']:.1f}–{x['tps_max']:.1f})"
            errs = [e.get("error") for e in raw.get(name, {}).get(rt, []) if e.get("error")]
            if errs:
                notes.append(f"- {name}, {rt}: fails: `{errs[0][:300]}`")
                return "fails"
            return "-"

        def ratio(x, y):
            return f"{s[x]['tps'] / s[y]['tps']:.2f}×" if s[x] and s[y] else "-"

        def trio(key, fmt):
            return " / ".join(fmt.format(s[rt][key]) if s[rt] else "-" for rt in rts)

        lines.append(
            f"| {name} | {cell('ours')} | {cell('transformers')} | {cell('llama.cpp')} "
            f"| {ratio('ours', 'transformers')} | {ratio('ours', 'llama.cpp')} "
            f"| {trio('load_s', '{:.1f}')} | {trio('peak_rss_mb', '{:.0f}')} |"
        )
        if s["ours-f32"] and s["ours"]:
            c, f = s["ours"], s["ours-f32"]
            f32_lines.append(
                f"| {name} | {cell('ours')} | {cell('ours-f32')} | {ratio('ours', 'ours-f32')} "
                f"| {c['weight_mib']:.0f} / {f['weight_mib']:.0f} | {c['peak_rss_mb']:.0f} / {f['peak_rss_mb']:.0f} "
                f"| {c['load_s']:.1f} / {f['load_s']:.1f} |"
            )
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = sorted({f"{rt} {e['version']}" for name, _, _ in models
                       for rt in ("transformers", "llama.cpp") for e in raw.get(name, {}).get(rt, [])
                       if "version" in e})
    finite = [x for x in loads if x == x]
    load_txt = (f"1-minute load average {min(finite):.1f} to {max(finite):.1f} during the run "
                f"(other work on the machine)" if finite else "load average unknown")
    head = (
        f"Prompt of {a.batch} × {a.tokens} tokens (the same ids in all three), last-position logits, "
        f"{a.threads} threads; {a.reps} interleaved subprocesses per runtime and model (rep-major, order rotated), "
        f"each the median of {a.runs} timed forwards after {a.warmup} warm-up; the cells give the median over "
        f"subprocesses (min–max). icl-probe: `icl-gdd-bench prefill`, compact weights; transformers: the "
        f"GGUF dequantised to float32; llama.cpp: llama-cpp-python, quantised blocks. Peak RSS per subprocess "
        f"(GNU time), load = reading the file to a ready model. {', '.join(versions)}. Measured {when} on "
        f"{platform.machine()}, {os.cpu_count()} cores, {load_txt} (`tools/prefill_side_by_side.py`)."
    )
    out = [head, "", *lines]
    if f32_lines:
        out += ["", "icl-probe's compact weights against every matrix expanded to float32 (`ICLGDD_WEIGHTS=f32`), "
                "same runs:", "",
                "| model | compact tok/s | f32 tok/s | compact / f32 | weights MiB (compact / f32) "
                "| peak RSS MB (compact / f32) | load s (compact / f32) |",
                "|---|---|---|---|---|---|---|", *f32_lines]
    if notes:
        out += [""] + notes
    return "\n".join(out) + "\n"


def write_section(path, table):
    text = open(path).read() if os.path.exists(path) else ""
    body = f"{SECTION}\n\n{table.rstrip()}\n"
    if SECTION in text:
        start = text.index(SECTION)
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body + ("\n" + text[nxt + 1:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote the table into {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
