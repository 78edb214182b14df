#!/usr/bin/env python3
"""Whole networks and primitives on the CPU, side by side in one sitting: the project's `icl-gdd-bench`
(burn, Flex backend) against PyTorch eager on the same shapes, thread count and (random) weights.

A measuring tool, never a product dependency. Rows (issue 18):

    matmul 1024² f32                      GFLOP/s   (icl-gdd-bench primitives)
    conv3x3 64→64ch 32px b16              GFLOP/s   (same process as matmul)
    conv3x3 32→32ch 147px b8              GFLOP/s   an Inception-stem-like shape (own process)
    exp 16×64×32×32                       GB/s      (same process; one element-wise op alone)
    GroupNorm(32)+SiLU 16×64×32×32        GB/s      (same process)
    EDM DDPM++ CIFAR-10 one-step b8       img/s     D(z·80), EDM's networks.py on the PyTorch side
    EDM DDPM++ training step b4           img/s     EDMLoss fwd+bwd, Adam, EMA (EDM's training loop)
    Inception-v3 pool3 32→299, b8         img/s     TF-Inception: ours random weights, PyTorch the
                                                    TorchScript default_1.pt (same graph; weights do not
                                                    change the speed), bilinear resize to 299 first
    GPT-2 124M 4×128 full logits          tok/s     transformers GPT2LMHeadModel, random init
    SmolLM2-135M prefill 1×128            tok/s     real GGUF; transformers dequantises it to float32
                                                    (the worker of tools/prefill_side_by_side.py)

Every measurement is its own subprocess (build or load, `--warmup` untimed runs, `--runs` timed runs,
median), run under GNU time so its peak RSS is that process's alone. Subprocesses are interleaved
rep-major - every row group and runtime once per rep, the runtime order alternated - so a burst of
background load on a shared machine hits both sides alike. Reported per row: the median over reps of each
subprocess's median (min-max), the ratio ours/PyTorch in throughput (= PyTorch time / our time), the
largest peak RSS of each side, and the 1-minute load average seen during the sitting. The primitives
rows share one process per side, so their RSS is that process's.

Usage (repository root):
    cargo build --release -p bench-cli
    ICLGDD_CACHE=/work/ci-cache /work/venv/bin/python tools/cpu_side_by_side.py --edm-ref /work/edm-ref \\
        --json-out /tmp/cpu.json --write-doc docs/performance.md
`--edm-ref` (or $EDM_REF) is a checkout of NVlabs/edm (its `training/networks.py` and `training/loss.py`
are imported at measurement time); without it the EDM rows run ours only. `--only GROUP` (repeatable)
picks row groups: primitives, conv-stem, edm-onestep, edm-train, inception, gpt2, smollm2.
"""
import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SECTION = "### Side by side: `tools/cpu_side_by_side.py`"

# (group, row key, label, unit, work per run in units of the throughput)
MM_N, CV = 1024, (16, 64, 32)  # matmul n; conv batch, channels, size
STEM = (8, 32, 147)  # few channels, large image: where burn-flex's im2col outweighs its GEMM
EDM_B, TRAIN_B, INC_B, GPT_B, GPT_T, PF_T = 8, 4, 8, 4, 128, 128
ROWS = [
    ("primitives", "matmul", f"matmul {MM_N}² f32", "GFLOP/s", 2 * MM_N**3 / 1e9),
    ("primitives", "conv3x3", f"conv3x3 {CV[1]}→{CV[1]}ch {CV[2]}px b{CV[0]}", "GFLOP/s",
     2 * CV[0] * CV[1] * CV[1] * 9 * CV[2] ** 2 / 1e9),
    ("primitives", "exp", f"exp (one unary op) {CV[0]}×{CV[1]}×{CV[2]}²", "GB/s", 2 * 4 * CV[0] * CV[1] * CV[2] ** 2 / 1e9),
    ("primitives", "gn_silu", f"GroupNorm(32)+SiLU {CV[0]}×{CV[1]}×{CV[2]}²", "GB/s",
     2 * 4 * CV[0] * CV[1] * CV[2] ** 2 / 1e9),
    ("conv-stem", "conv_stem", f"conv3x3 {STEM[1]}→{STEM[1]}ch {STEM[2]}px b{STEM[0]} (Inception-stem-like)",
     "GFLOP/s", 2 * STEM[0] * STEM[1] * STEM[1] * 9 * STEM[2] ** 2 / 1e9),
    ("edm-onestep", "edm_onestep", f"EDM DDPM++ CIFAR-10 (55.7M) one-step b{EDM_B}", "img/s", EDM_B),
    ("edm-train", "edm_train", f"EDM DDPM++ training step (fwd+bwd+Adam+EMA) b{TRAIN_B}", "img/s", TRAIN_B),
    ("inception", "inception", f"Inception-v3 pool3, 32→299, b{INC_B}", "img/s", INC_B),
    ("gpt2", "gpt2", f"GPT-2 124M {GPT_B}×{GPT_T} full logits", "tok/s", GPT_B * GPT_T),
    ("smollm2", "smollm2", f"SmolLM2-135M Q4_1 GGUF prefill 1×{PF_T}", "tok/s", PF_T),
]
GROUPS = list(dict.fromkeys(r[0] for r in ROWS))


def timed(runs, warmup, f):
    for _ in range(warmup):
        f()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---------------------------------------------------------------- PyTorch workers (one per subprocess)

def edm_modules(edm_ref):
    sys.path.insert(0, edm_ref)
    from training.loss import EDMLoss
    from training.networks import EDMPrecond

    return EDMPrecond, EDMLoss


def ddpmpp(EDMPrecond):
    """EDM's `train.py --arch=ddpmpp --precond=edm` on CIFAR-10 (augment on: augment_dim 9, dropout 0.13)."""
    return EDMPrecond(img_resolution=32, img_channels=3, label_dim=0, use_fp16=False, model_type="SongUNet",
                      embedding_type="positional", encoder_type="standard", decoder_type="standard",
                      channel_mult_noise=1, resample_filter=[1, 1], model_channels=128, channel_mult=[2, 2, 2],
                      augment_dim=9, dropout=0.13)


def worker(a):
    import torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    out = {"torch": torch.__version__}
    g = a.worker
    if g == "primitives":
        x = torch.randn(MM_N, MM_N)
        y = torch.randn(MM_N, MM_N)
        with torch.no_grad():
            out["matmul"] = timed(a.runs, a.warmup, lambda: x @ y)
            b, c, s = CV
            xi = torch.randn(b, c, s, s)
            w = torch.randn(c, c, 3, 3)
            out["conv3x3"] = timed(a.runs, a.warmup, lambda: torch.nn.functional.conv2d(xi, w, padding=1))
            out["exp"] = timed(a.runs, a.warmup, lambda: torch.exp(xi))
            out["gn_silu"] = timed(a.runs, a.warmup,
                                   lambda: torch.nn.functional.silu(torch.nn.functional.group_norm(xi, 32, eps=1e-5)))
    elif g == "conv-stem":
        b, c, s = STEM
        xi = torch.randn(b, c, s, s)
        w = torch.randn(c, c, 3, 3)
        with torch.no_grad():
            out["conv_stem"] = timed(a.runs, a.warmup, lambda: torch.nn.functional.conv2d(xi, w, padding=1))
    elif g == "edm-onestep":
        EDMPrecond, _ = edm_modules(a.edm_ref)
        net = ddpmpp(EDMPrecond).eval()
        z = torch.randn(EDM_B, 3, 32, 32)
        sigma = torch.full([EDM_B], 80.0)
        with torch.no_grad():
            out["edm_onestep"] = timed(a.runs, a.warmup, lambda: net(z * 80.0, sigma))
        out["params_m"] = sum(p.numel() for p in net.parameters()) / 1e6
    elif g == "edm-train":
        import copy

        EDMPrecond, EDMLoss = edm_modules(a.edm_ref)
        net = ddpmpp(EDMPrecond).train().requires_grad_(True)
        ema = copy.deepcopy(net).eval().requires_grad_(False)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
        loss_fn = EDMLoss()
        images = torch.rand(2 * TRAIN_B, 3, 32, 32) * 2 - 1
        step = [0]

        def train_step():
            # EDM's training loop (training/training_loop.py) for one round, one accumulation round.
            i = step[0] % 2
            step[0] += 1
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net=net, images=images[i * TRAIN_B:(i + 1) * TRAIN_B])
            loss.sum().mul(1.0 / TRAIN_B).backward()
            for p in net.parameters():
                if p.grad is not None:
                    torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
            opt.step()
            with torch.no_grad():
                for pe, pn in zip(ema.parameters(), net.parameters()):
                    pe.copy_(pn.detach().lerp(pe, 0.999))

        out["edm_train"] = timed(a.runs, a.warmup, train_step)
    elif g == "inception":
        path = a.inception
        if not path or not os.path.isfile(path):
            raise SystemExit("inception: no default_1.pt (set ICLGDD_CACHE or --inception)")
        import warnings

        warnings.simplefilter("ignore")
        net = torch.jit.load(path).eval()
        imgs = torch.floor(torch.rand(INC_B, 3, 32, 32) * 255)

        def f():
            x = torch.nn.functional.interpolate(imgs, size=(299, 299), mode="bilinear", align_corners=False)
            return net((x - 128) / 128)

        with torch.no_grad():
            out["inception"] = timed(a.runs, a.warmup, f)
    elif g == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        model = GPT2LMHeadModel(GPT2Config()).eval()
        v = model.config.vocab_size
        ids = torch.tensor([[((r * GPT_T + i) * 2_654_435_761) % v for i in range(GPT_T)] for r in range(GPT_B)])
        with torch.no_grad():
            out["gpt2"] = timed(a.runs, a.warmup, lambda: model(input_ids=ids, use_cache=False).logits)
    elif g == "smollm2":
        spec = importlib.util.spec_from_file_location("prefill_sbs", os.path.join(HERE, "prefill_side_by_side.py"))
        pf = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(pf)
        ns = argparse.Namespace(model=a.gguf, vocab=pf.gguf_vocab(a.gguf), batch=1, tokens=PF_T,
                                threads=a.threads, runs=a.runs, warmup=a.warmup)
        r = pf.worker_transformers(ns)
        out["smollm2"] = statistics.median(r["times"])
        out["load_s"] = r["load_s"]
    else:
        raise SystemExit(f"unknown group {g}")
    print(json.dumps(out))


# ---------------------------------------------------------------- ours: icl-gdd-bench rows

OURS_PREFIX = {  # workload column of icl-gdd-bench's Markdown row -> row key
    "matmul": "matmul",
    "conv3x3": "conv3x3",
    "GroupNorm+SiLU": "gn_silu",
    "exp": "exp",
    "EDM Ddpmpp one-step": "edm_onestep",
    "EDM Ddpmpp training step": "edm_train",
    "Inception-v3 pool3": "inception",
    "GPT-2 124M forward": "gpt2",
}


def ours_command(a, group):
    base = [a.bench, "--runs", str(a.runs), "--warmup", str(a.warmup)]
    return {
        "primitives": base + ["primitives", "--n", str(MM_N), "--batch", str(CV[0]), "--channels", str(CV[1]),
                              "--size", str(CV[2])],
        "conv-stem": base + ["primitives", "--n", "64", "--batch", str(STEM[0]), "--channels", str(STEM[1]),
                             "--size", str(STEM[2])],
        "edm-onestep": base + ["edm", "--net", "ddpmpp", "--mode", "onestep", "--batch", str(EDM_B)],
        "edm-train": base + ["edm", "--net", "ddpmpp", "--mode", "train", "--batch", str(TRAIN_B)],
        "inception": base + ["inception", "--batch", str(INC_B), "--resolution", "32"],
        "gpt2": base + ["gpt2", "--batch", str(GPT_B), "--tokens", str(GPT_T)],
        "smollm2": base + ["prefill", "--model", a.gguf or "", "--tokens", str(PF_T), "--batch", "1",
                           "--threads", str(a.threads), "--json"],
    }[group]


def parse_ours(stdout, group):
    """Row key -> median seconds, from icl-gdd-bench's Markdown rows (or the prefill JSON line)."""
    res = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            res["smollm2"] = json.loads(line)["median_s"]
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5 or not cells[3].endswith(" ms"):
            continue
        for prefix, key in OURS_PREFIX.items():
            if cells[0].startswith(prefix):
                res[key] = float(cells[3][:-3]) / 1e3
    if group == "conv-stem":  # the primitives process of the stem shape: only its conv row counts
        return {"conv_stem": res["conv3x3"]} if "conv3x3" in res else {}
    return res


# ---------------------------------------------------------------- driver

def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def run_measured(cmd, env, timeout):
    """(returncode, stdout, stderr, wall_s, peak_rss_mb) of one subprocess under GNU time (%M)."""
    full = ["/usr/bin/time", "-f", "MAXRSS_KB=%M", *cmd]
    t0 = time.perf_counter()
    proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    wall = time.perf_counter() - t0
    rss = None
    keep = []
    for l in err.splitlines():
        if l.startswith("MAXRSS_KB="):
            rss = int(l.split("=", 1)[1]) / 1024
        else:
            keep.append(l)
    return proc.returncode, out, "\n".join(keep), wall, rss


def asset(name):
    cache = os.environ.get("ICLGDD_CACHE")
    if not cache:
        return None
    d = os.path.join(cache, name)
    return d if os.path.isdir(d) else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="interleaved subprocesses per side and row group")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per subprocess (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--only", action="append", choices=GROUPS, help="row group (repeatable); default: all")
    ap.add_argument("--bench", default=os.path.join(ROOT, "target", "release", "icl-gdd-bench"))
    ap.add_argument("--edm-ref", default=os.environ.get("EDM_REF"), help="NVlabs/edm checkout")
    ap.add_argument("--inception", help="default_1.pt (default: $ICLGDD_CACHE/inception-2015-12-05)")
    ap.add_argument("--gguf", help="SmolLM2 GGUF (default: $ICLGDD_CACHE/smollm2-135m-gguf/*.gguf)")
    ap.add_argument("--python", default=sys.executable, help="interpreter with torch for the PyTorch side")
    ap.add_argument("--timeout", type=int, default=1200)
    ap.add_argument("--write-doc", help="Markdown file whose subsection '" + SECTION[4:] + "' gets the table")
    ap.add_argument("--json-out", help="also write every raw measurement here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.inception is None and asset("inception-2015-12-05"):
        a.inception = os.path.join(asset("inception-2015-12-05"), "default_1.pt")
    if a.gguf is None and asset("smollm2-135m-gguf"):
        d = asset("smollm2-135m-gguf")
        ggufs = sorted(f for f in os.listdir(d) if f.endswith(".gguf"))
        a.gguf = os.path.join(d, ggufs[0]) if ggufs else None
    if a.worker:
        return worker(a)

    groups = [g for g in GROUPS if g in (a.only or GROUPS)]
    if "smollm2" in groups and not a.gguf:
        print("smollm2: no GGUF (set ICLGDD_CACHE or --gguf), skipped", file=sys.stderr)
        groups.remove("smollm2")
    if not os.access(a.bench, os.X_OK):
        sys.exit(f"{a.bench}: not built (cargo build --release -p bench-cli)")

    def command(side, group):
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads),
                   RAYON_NUM_THREADS=str(a.threads))
        if side == "ours":
            return env, ours_command(a, group)
        if group.startswith("edm") and not a.edm_ref:
            return env, None
        cmd = [a.python, os.path.abspath(__file__), "--worker", group, "--threads", str(a.threads),
               "--runs", str(a.runs), "--warmup", str(a.warmup)]
        for flag, v in (("--edm-ref", a.edm_ref), ("--inception", a.inception), ("--gguf", a.gguf)):
            if v:
                cmd += [flag, v]
        return env, cmd

    raw = {}
    loads = [loadavg()]
    sides = ["ours", "pytorch"]
    for rep in range(a.reps):
        for gi, group in enumerate(groups):
            order = sides if (rep + gi) % 2 == 0 else sides[::-1]
            for side in order:
                env, cmd = command(side, group)
                if cmd is None:
                    continue
                before = loadavg()
                rc, out, err, wall, rss = run_measured(cmd, env, a.timeout)
                after = loadavg()
                loads.append(after)
                entry = {"rep": rep, "wall_s": wall, "peak_rss_mb": rss, "load_before": before, "load_after": after}
                if rc == 0:
                    if side == "ours":
                        entry["medians"] = parse_ours(out, group)
                    else:
                        lines = [l for l in out.splitlines() if l.startswith("{")]
                        r = json.loads(lines[-1]) if lines else {}
                        entry["medians"] = {k: v for k, v in r.items() if k in {x[1] for x in ROWS}}
                        entry["info"] = {k: v for k, v in r.items() if k not in entry["medians"]}
                if rc != 0 or not entry.get("medians"):
                    errs = [l for l in err.splitlines() if l.strip()]
                    entry["error"] = " / ".join(errs[-2:]) or f"exit {rc}"
                raw.setdefault(group, {}).setdefault(side, []).append(entry)
                what = (", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in entry["medians"].items())
                        if entry.get("medians") else "FAILED: " + entry["error"][:300])
                print(f"[rep {rep + 1}/{a.reps} {group}] {side}: {what}, peak RSS {rss or 0:.0f} MB "
                      f"({wall:.0f} s, load {before:.2f} -> {after:.2f})", file=sys.stderr, flush=True)
                if a.json_out:
                    with open(a.json_out, "w") as f:
                        json.dump(raw, f, indent=1)

    table = render(raw, groups, a, loads)
    print(table)
    if a.write_doc:
        write_section(a.write_doc, table)


def render(raw, groups, a, loads):
    lines = ["| workload | unit | ours | PyTorch | ours / PyTorch | peak RSS MB (ours / PyTorch) |",
             "|---|---|---|---|---|---|"]
    notes = []
    torch_v = set()
    for group, key, label, unit, work in ROWS:
        if group not in groups:
            continue
        cell, med, rss = {}, {}, {}
        for side in ("ours", "pytorch"):
            entries = raw.get(group, {}).get(side, [])
            for e in entries:
                torch_v.update([e["info"]["torch"]] if "torch" in e.get("info", {}) else [])
            ts = [e["medians"][key] for e in entries if key in e.get("medians", {})]
            rs = [e["peak_rss_mb"] for e in entries if e.get("peak_rss_mb")]
            rss[side] = f"{max(rs):.0f}" if rs else "-"
            if ts:
                th = [work / t for t in ts]
                med[side] = statistics.median(th)
                cell[side] = f"{med[side]:.2f} ({min(th):.2f}–{max(th):.2f})"
            else:
                errs = [e["error"] for e in entries if "error" in e]
                cell[side] = "fails" if errs else "-"
                if errs:
                    notes.append(f"- {label}, {side}: `{errs[0][:300]}`")
        ratio = f"{med['ours'] / med['pytorch']:.2f}×" if "ours" in med and "pytorch" in med else "-"
        lines.append(f"| {label} | {unit} | {cell['ours']} | {cell['pytorch']} | {ratio} "
                     f"| {rss['ours']} / {rss['pytorch']} |")
    finite = [x for x in loads if x == x]
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = (f"{a.threads} threads on both sides (rayon pool / `torch.set_num_threads`), random weights "
            f"(Inception on the PyTorch side: the TorchScript `default_1.pt`), {a.reps} interleaved subprocesses "
            f"per side and row group, each the median of {a.runs} timed runs after {a.warmup} warm-up; cells: "
            f"median over subprocesses (min–max) of throughput; ratio > 1 means ours is faster. Peak RSS: the "
            f"largest of a side's subprocesses (GNU time). PyTorch {', '.join(sorted(torch_v)) or '?'} eager. "
            f"Measured {when} on {platform.machine()}, {os.cpu_count()} cores, 1-minute load average "
            f"{min(finite):.1f} to {max(finite):.1f} during the sitting (`tools/cpu_side_by_side.py`).")
    return "\n".join([head, "", *lines, *([""] + notes if notes else [])]) + "\n"


def write_section(path, table):
    """Replaces the subsection SECTION (up to the next heading of level ≤ 3) or appends it to the section
    "Whole networks on the CPU against PyTorch"."""
    text = open(path).read()
    body = f"{SECTION}\n\n{table.rstrip()}\n"
    if SECTION in text:
        start = text.index(SECTION)
        end = len(text)
        for h in ("\n## ", "\n### "):
            j = text.find(h, start + len(SECTION))
            if j >= 0:
                end = min(end, j)
        text = text[:start] + body + text[end:]
    else:
        anchor = text.find("## Whole networks on the CPU against PyTorch")
        nxt = text.find("\n## ", anchor + 3) if anchor >= 0 else -1
        if nxt >= 0:
            text = text[:nxt + 1] + body + "\n" + text[nxt + 1:]
        else:
            text = text.rstrip("\n") + "\n\n" + body
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote the table into {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
