#!/usr/bin/env python3
"""Golden fixture for icl-probe's ggml dequantisation (crates/icl-probe/src/quant.rs), checked by
crates/icl-probe/tests/quant_golden.rs.

Reference: the `gguf` Python package (gguf-py, llama.cpp's own GGUF library), whose
`gguf.quants.dequantize(raw_bytes, qtype)` is a numpy port of ggml's reference dequantisers.

Cases (each: the raw block bytes and gguf-py's float32 result):
  1. real tensor slices: for every ggml type present in each real GGUF file, two tensors of that type
     (the first in file order and one from the middle of the tensor list); from the first its row 0,
     from the second its middle row; at most 2048 elements of the row (whole blocks).
  2. synthetic blocks, for every supported type (so types absent from the real files, Q4_0, Q5_1,
     Q2_K, Q3_K, Q5_K, Q8_K, F16, BF16, are covered too): 2048 elements' worth of uniformly random
     bytes, with the f16 scale/min fields overwritten by random finite f16 values (signed, spread over
     about four decades) so no block holds an inf/NaN scale. Random quant bits exercise every bit
     of the packed scales, which real files rarely do.
  3. gguf-py's own quantiser where it has one (Q8_0, BF16, ...): quantize(random normal data).
Q8_K is only an intermediate type in ggml (dot products); if gguf-py cannot dequantise it, the
expected values are computed here as d * q in float32 numpy and the case name says so.

File format (little-endian), crates/icl-probe/tests/fixtures/quant_golden.bin:
    b"QGOLD1\\n\\0", u32 n_cases, then per case:
    u16 len, name (utf-8); u32 ggml type id; u32 n_elements; u32 n_bytes; raw bytes;
    n_elements x f32 expected.

Usage (from the repository root; numpy and gguf from the venv):
    /work/venv/bin/python tools/make_quant_golden.py [--model NAME=PATH ...]
Real files default to the asset cache ($ICLGDD_CACHE or ~/.cache/icl-gdd/assets, `assets path NAME`),
then $ICLGDD_MODEL_DIR/NAME.gguf; a model that is not found is reported and left out.
"""
import argparse
import os
import struct
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

OUT = Path("crates/icl-probe/tests/fixtures/quant_golden.bin")
MAX_ELEMS = 2048
SEED = 20240611

# asset name -> file name inside its cache folder (crates/assets/src/catalog.rs)
MODELS = {
    "smollm2-135m-gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen2.5-coder-0.5b-q4km": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "qwen2.5-coder-1.5b-q4km": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    "gemma-3-270m-q4km": "gemma-3-270m-q4_k_m.gguf",
}

SUPPORTED = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
             T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_K]

# Byte offsets of the f16 scale/min fields inside one block (ggml-common.h).
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def cache_root():
    env = os.environ.get("ICLGDD_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "icl-gdd" / "assets"


def find_model(name, overrides):
    if name in overrides:
        return Path(overrides[name])
    p = cache_root() / name / MODELS[name]
    if p.is_file():
        return p
    p = Path(os.environ.get("ICLGDD_MODEL_DIR", "/work/models")) / f"{name}.gguf"
    return p if p.is_file() else None


def dequant(raw, qtype):
    """gguf-py's dequantisation of raw block bytes, flattened to float32."""
    if qtype == T.F32:
        return np.frombuffer(raw.tobytes(), dtype=np.float32).copy(), "gguf-py"
    try:
        y = gguf.quants.dequantize(raw, qtype)
        return np.asarray(y, dtype=np.float32).reshape(-1), "gguf-py"
    except NotImplementedError:
        if qtype != T.Q8_K:
            raise
        blocks = raw.reshape(-1, GGML_QUANT_SIZES[T.Q8_K][1])
        d = blocks[:, :4].copy().view(np.float32)
        q = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
        return (d * q).reshape(-1), "numpy d*q (gguf-py has no Q8_K)"


def real_cases(name, path):
    reader = gguf.GGUFReader(str(path))
    by_type = {}
    for t in reader.tensors:
        by_type.setdefault(T(t.tensor_type), []).append(t)
    cases = []
    for qtype, tensors in sorted(by_type.items()):
        if qtype not in SUPPORTED:
            print(f"  {name}: {qtype.name} not supported, skipped", file=sys.stderr)
            continue
        block, type_size = GGML_QUANT_SIZES[qtype]
        picks = [(tensors[0], "first")]
        if len(tensors) > 1:
            picks.append((tensors[len(tensors) // 2], "middle"))
        for t, which in picks:
            ne = [int(x) for x in t.shape]  # ggml order: ne[0] is the row length
            row_len = ne[0]
            n_rows = int(np.prod(ne[1:])) if len(ne) > 1 else 1
            row = 0 if which == "first" else n_rows // 2
            n = min(row_len, MAX_ELEMS) // block * block
            row_bytes = row_len // block * type_size
            start = int(t.data_offset) + row * row_bytes
            raw = np.array(reader.data[start:start + n // block * type_size], dtype=np.uint8)
            y, ref = dequant(raw, qtype)
            label = f"real {name} {t.name} row {row} [0..{n}) ({ref})"
            cases.append((label, qtype, n, raw, y))
    return cases


def synthetic_cases(rng):
    cases = []
    for qtype in SUPPORTED:
        block, type_size = GGML_QUANT_SIZES[qtype]
        n = MAX_ELEMS
        nb = n // block
        if qtype == T.F32:
            raw = rng.standard_normal(n).astype(np.float32).view(np.uint8)
        elif qtype == T.F16:
            raw = (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 1, n)).astype(np.float16).view(np.uint8)
        elif qtype == T.BF16:
            f = (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 1, n)).astype(np.float32)
            raw = (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        else:
            blocks = rng.integers(0, 256, size=(nb, type_size), dtype=np.uint8)
            scales = (rng.standard_normal((nb, 2)) * 10.0 ** rng.uniform(-4, 0, (nb, 2))).astype(np.float16)
            for k, off in enumerate(F16_FIELDS.get(qtype, [])):
                blocks[:, off:off + 2] = scales[:, k:k + 1].view(np.uint8)
            if qtype == T.Q8_K:
                d = (np.abs(rng.standard_normal(nb)) * 1e-2).astype(np.float32)
                blocks[:, 0:4] = d.reshape(-1, 1).view(np.uint8)
            raw = blocks.reshape(-1)
        raw = np.ascontiguousarray(raw, dtype=np.uint8)
        y, ref = dequant(raw, qtype)
        cases.append((f"synthetic {qtype.name} random blocks, seed {SEED} ({ref})", qtype, n, raw, y))
    return cases


def quantizer_cases(rng):
    cases = []
    for qtype in SUPPORTED:
        if qtype in (T.F32, T.F16):
            continue
        x = rng.standard_normal((4, 512)).astype(np.float32)
        try:
            raw = gguf.quants.quantize(x, qtype)
        except (NotImplementedError, gguf.quants.QuantError):
            continue
        raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
        y, ref = dequant(raw, qtype)
        cases.append((f"gguf-py quantize {qtype.name} of N(0,1), seed {SEED} ({ref})", qtype, x.size, raw, y))
    return cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", default=[], help="NAME=PATH")
    args = ap.parse_args()
    overrides = dict(m.split("=", 1) for m in args.model)
    rng = np.random.default_rng(SEED)
    cases = []
    for name in MODELS:
        path = find_model(name, overrides)
        if path is None:
            print(f"  {name}: not found, left out", file=sys.stderr)
            continue
        print(f"  {name}: {path}", file=sys.stderr)
        cases += real_cases(name, path)
    cases += synthetic_cases(rng)
    cases += quantizer_cases(rng)

    out = bytearray(b"QGOLD1\n\0")
    out += struct.pack("<I", len(cases))
    for label, qtype, n, raw, y in cases:
        assert y.shape == (n,) and y.dtype == np.float32, label
        assert np.all(np.isfinite(y)), label
        b = label.encode()
        out += struct.pack("<H", len(b)) + b
        out += struct.pack("<III", int(qtype), n, raw.size)
        out += raw.tobytes()
        out += y.astype("<f4").tobytes()
        print(f"{qtype.name:5} n={n:5} {label}", file=sys.stderr)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(bytes(out))
    from importlib.metadata import version
    print(f"wrote {OUT} ({len(out)} bytes, {len(cases)} cases), gguf {version('gguf')}, numpy {np.__version__}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
