#!/usr/bin/env python3
"""Issue #20's proof: drive the CLIs (edm, fid, icl-probe, gdd) with the hostile and careless inputs the
adversarial pass used, and count how each run ends.

Every case is built here (python3 standard library only, a few MB in a temporary folder) and run
under a timeout and an address-space limit, so a regression shows as a count, not as a stuck or
swapping machine:

    panic   exit 101 (a Rust panic)
    abort   SIGABRT / SIGSEGV / SIGKILL or exit 134/137 (allocation failure, stack overflow, OOM)
    hang    still running at the timeout
    accepted  exit 0 on nonsense (a case that should have been refused)
    refused   a non-zero exit with a message on stderr and no panic: the wanted outcome

Usage: scripts/hostile-inputs.py [--bin-dir target/release] [--timeout 60] [--mem-gib 8] [-k FILTER]
Exit status 0 only when every case is refused. Build first:
    cargo build --release -p edm-cli -p fid-cli -p icl-probe-cli -p gdd-cli
"""

import argparse
import gzip
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EDM_FIXTURE = ROOT / "crates/edm-core/tests/fixtures/edm_ddpmpp_tiny"  # 3 x 16 x 16, label_dim 10
LLAMA_FIXTURE = ROOT / "crates/icl-probe/tests/fixtures/llama_tiny"  # context 64, vocab 1000


# ---------------------------------------------------------------- file builders


def safetensors(path, tensors):
    """tensors: name -> (dtype, shape, raw bytes)."""
    header, offset, body = {}, 0, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        body += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + body)
    return path


def f32(values):
    return struct.pack(f"<{len(values)}f", *values)


def zeros_f32(n):
    return bytes(4 * n)


def denoise_input(path, shape, sigma, extra=None):
    n = 1
    for d in shape:
        n *= d
    t = {"x": ("F32", shape, zeros_f32(n))}
    if sigma is not None:
        t["sigma"] = ("F32", [len(sigma)], f32(sigma))
    t.update(extra or {})
    return safetensors(path, t)


def edm_model(dirpath, **config_changes):
    """The tiny DDPM++ fixture with config.json keys changed (None deletes a key)."""
    dirpath.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((EDM_FIXTURE / "config.json").read_text())
    for k, v in config_changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (dirpath / "config.json").write_text(json.dumps(cfg))
    model = dirpath / "model.safetensors"
    if not model.exists():
        model.symlink_to(EDM_FIXTURE / "model.safetensors")
    return dirpath


def nan_weights(dirpath):
    """The fixture's tensors with every value NaN."""
    dirpath.mkdir(parents=True, exist_ok=True)
    raw = (EDM_FIXTURE / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = bytearray(raw[8 + n :])
    nan = struct.pack("<f", float("nan"))
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        a, b = info["data_offsets"]
        body[a:b] = nan * ((b - a) // 4)
    (dirpath / "model.safetensors").write_bytes(raw[: 8 + n] + bytes(body))
    (dirpath / "config.json").write_text((EDM_FIXTURE / "config.json").read_text())
    return dirpath


def npy(shape, raw, descr="<f8"):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        descr,
        "".join(f"{d}, " for d in shape),
    )
    header += " " * (-(len(header) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + raw


def npz(path, members, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compress) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def stats(d):
    mu = struct.pack(f"<{d}d", *([0.0] * d))
    sigma = struct.pack(f"<{d * d}d", *[1.0 if i % (d + 1) == 0 else 0.0 for i in range(d * d)])
    return {"mu.npy": npy([d], mu), "sigma.npy": npy([d, d], sigma)}


def patch_zip_sizes(path, member, declared):
    """Rewrites `member`'s uncompressed size in its local and central headers (a bomb's lie)."""
    b = bytearray(path.read_bytes())
    name = member.encode()
    i = 0
    while True:
        i = b.find(b"PK\x03\x04", i)
        if i < 0:
            break
        nlen = struct.unpack_from("<H", b, i + 26)[0]
        if bytes(b[i + 30 : i + 30 + nlen]) == name:
            struct.pack_into("<I", b, i + 22, declared)
        i += 4
    i = 0
    while True:
        i = b.find(b"PK\x01\x02", i)
        if i < 0:
            break
        nlen = struct.unpack_from("<H", b, i + 28)[0]
        if bytes(b[i + 46 : i + 46 + nlen]) == name:
            struct.pack_into("<I", b, i + 24, declared)
        i += 4
    path.write_bytes(bytes(b))
    return path


def zip_with_zeros(path, member, nbytes, others=None):
    """A deflated member of `nbytes` zeros (a few hundred kB on disk per 100 MB)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in (others or {}).items():
            z.writestr(name, data)
        with z.open(member, "w", force_zip64=True) as f:
            chunk = bytes(1 << 20)
            for _ in range(nbytes >> 20):
                f.write(chunk)
    return path


def idx_header(dims):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)


def gz_stream(path, head, zero_bytes):
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(head)
        chunk = bytes(1 << 20)
        for _ in range(zero_bytes >> 20):
            f.write(chunk)
    return path


def png(path, w, h, pixels=None, rgb=False):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    per = 3 if rgb else 1
    raw = pixels if pixels is not None else b"".join(b"\x00" + bytes(w * per) for _ in range(min(h, 64)))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2 if rgb else 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


def gguf(path, kv, tensors=0, raw_tail=b""):
    """kv: list of (key, type, value); types: 'u32', 'str', 'arr' (value = raw bytes after type)."""
    b = struct.pack("<IIQQ", 0x46554747, 3, tensors, len(kv))
    for key, kind, value in kv:
        b += struct.pack("<Q", len(key)) + key.encode()
        if kind == "u32":
            b += struct.pack("<II", 4, value)
        elif kind == "str":
            b += struct.pack("<IQ", 8, len(value)) + value.encode()
        elif kind == "raw":
            b += value
    path.write_bytes(b + raw_tail)
    return path


def llama_kv(**changes):
    kv = {
        "general.architecture": ("str", "llama"),
        "llama.embedding_length": ("u32", 64),
        "llama.attention.head_count": ("u32", 4),
        "llama.attention.head_count_kv": ("u32", 2),
        "llama.block_count": ("u32", 2),
        "llama.feed_forward_length": ("u32", 128),
        "llama.vocab_size": ("u32", 100),
        "llama.context_length": ("u32", 256),
    }
    for k, v in changes.items():
        kv[k.replace("__", ".")] = ("u32", v)
    return [(k, t, v) for k, (t, v) in kv.items()]


def nested_array(depth):
    """GGUF metadata value: arrays of arrays `depth` deep (type 9 = array)."""
    inner = struct.pack("<IQ", 4, 1) + struct.pack("<I", 7)  # array of one u32
    for _ in range(depth):
        inner = struct.pack("<IQ", 9, 1) + inner
    return struct.pack("<I", 9) + inner


def hf_model(dirpath, **changes):
    dirpath.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((LLAMA_FIXTURE / "config.json").read_text())
    cfg.update(changes)
    (dirpath / "config.json").write_text(json.dumps(cfg))
    m = dirpath / "model.safetensors"
    if not m.exists():
        m.symlink_to(LLAMA_FIXTURE / "model.safetensors")
    return dirpath


def input_ids(path, b, t, value=1):
    return safetensors(path, {"input_ids": ("I64", [b, t], struct.pack("<q", value) * (b * t))})


def fifo(path):
    os.mkfifo(path)
    return path


# ---------------------------------------------------------------- the cases


def cases(t, bins):
    """(name, argv, expected-in-stderr or None) for every case. `t` is the scratch folder."""
    edm, fid, icl = str(bins / "edm"), str(bins / "fid"), str(bins / "icl-probe")
    out = lambda name: str(t / "out" / name)  # noqa: E731
    (t / "out").mkdir()
    good = str(EDM_FIXTURE)
    x = lambda name, shape, sigma=(1.0,), extra=None: str(  # noqa: E731
        denoise_input(t / f"{name}.safetensors", shape, list(sigma) if sigma is not None else None, extra)
    )
    c = []
    den = lambda name, model, inp, expect=None: c.append(  # noqa: E731
        (f"edm denoise: {name}", [edm, "denoise", "--model", model, "--input", inp, "--output", out(name + ".st")], expect)
    )
    # -- edm denoise: inputs against the network (panics and aborts before #20)
    den("3->1 wrong channels", good, x("ch1", [1, 1, 16, 16]), "network takes")
    den("5 channels", good, x("ch5", [2, 5, 16, 16], (1.0, 1.0)), "network takes")
    den("1x1 image", good, x("one", [1, 3, 1, 1]), "network takes")
    den("15x15 image", good, x("fifteen", [1, 3, 15, 15]), "network takes")
    den("2048x2048 image", good, x("big", [1, 3, 2048, 2048]), "network takes")
    den("16x32 image", good, x("rect", [1, 3, 16, 32]), "network takes")
    den("3-D x", good, x("threed", [3, 16, 16]), "4 dimensions")
    den("N = 0", good, x("empty", [0, 3, 16, 16], ()), None)
    den("sigma NaN", good, x("nan", [1, 3, 16, 16], (float("nan"),)), "sigma")
    den("sigma 0", good, x("zero", [1, 3, 16, 16], (0.0,)), "sigma")
    den("sigma negative", good, x("neg", [1, 3, 16, 16], (-1.0,)), "sigma")
    den("sigma inf", good, x("inf", [1, 3, 16, 16], (float("inf"),)), "sigma")
    den("sigma count differs", good, x("count", [2, 3, 16, 16], (1.0,)), None)
    den("no sigma", good, x("nosigma", [1, 3, 16, 16], None), "sigma")
    den("class_labels wrong shape", good, x("labels", [1, 3, 16, 16], (1.0,), {"class_labels": ("F32", [1, 3], f32([0, 0, 1]))}), "class_labels")
    trunc = t / "trunc.safetensors"
    trunc.write_bytes(Path(x("whole", [1, 3, 16, 16])).read_bytes()[:-100])
    den("truncated input", good, str(trunc), None)
    den("input is a FIFO", good, str(fifo(t / "in.fifo")), "FIFO")
    den("input is /dev/zero", good, "/dev/zero", "character device")
    den("input is a folder", good, str(t), None)
    ok = x("ok", [1, 3, 16, 16])
    # -- edm: configs and weights (silently accepted before #20)
    for name, change, expect in [
        ("sigma_data 0", {"sigma_data": 0}, "sigma_data"),
        ("sigma_data negative", {"sigma_data": -0.5}, "sigma_data"),
        ("sigma_min negative", {"sigma_min": -1.0}, "sigma_min"),
        ("sigma range inverted", {"sigma_min": 10.0, "sigma_max": 1.0}, "inverted"),
        ("sigma_max 0", {"sigma_max": 0.0}, "sigma_max"),
        ("sigma_data NaN (as a string)", {"sigma_data": "NaN"}, None),
        ("missing precond", {"precond": None}, "missing `precond`"),
        ("missing model_type", {"model_type": None}, "missing `model_type`"),
        ("img_channels 0", {"img_channels": 0}, "img_channels"),
        ("resolution not divisible", {"img_resolution": 15}, "not divisible"),
        ("model_channels 10^7", {"model_channels": 10_000_000}, "EDM_MAX_PARAMETERS"),
        ("channel_mult with 0", {"channel_mult": [1, 0]}, "channel_mult"),
        ("dropout 2", {"dropout": 2.0}, "dropout"),
        ("unknown key", {"modle_channels": 3}, "unknown field"),
    ]:
        d = edm_model(t / ("cfg-" + name.replace(" ", "_").replace("^", "")), **change)
        den("config " + name, str(d), ok, expect)
    den("all-NaN weights", str(nan_weights(t / "nanw")), ok, "non-finite")
    fcfg = t / "fifo-config"
    fcfg.mkdir()
    fifo(fcfg / "config.json")
    (fcfg / "model.safetensors").symlink_to(EDM_FIXTURE / "model.safetensors")
    den("config.json is a FIFO", str(fcfg), ok, "FIFO")
    notjson = edm_model(t / "notjson")
    (notjson / "config.json").write_text("{ not json")
    den("config.json not JSON", str(notjson), ok, None)
    # -- edm sample: flags
    smp = lambda name, extra, expect=None: c.append(  # noqa: E731
        (f"edm sample: {name}", [edm, "sample", "--model", good, "--output", out(name.replace(" ", "_") + ".st"), *([] if "--steps" in extra else ["--steps", "2"]), *extra], expect)
    )
    smp("seeds 0-4000000000", ["--seeds", "0-4000000000"], "EDM_MAX_SEEDS")
    smp("seeds 0-max u64", ["--seeds", "0-18446744073709551615"], "EDM_MAX_SEEDS")
    smp("seeds reversed", ["--seeds", "5-1"], "seed")
    smp("seeds garbage", ["--seeds", "a-b"], "seed")
    smp("steps 2000000000", ["--steps", "2000000000", "--seeds", "0"], "EDM_MAX_STEPS")
    smp("steps 0", ["--steps", "0", "--seeds", "0"], "steps")
    smp("sigma-max below sigma-min", ["--sigma-min", "5", "--sigma-max", "1", "--seeds", "0"], "sigma")
    smp("sigma-min NaN", ["--sigma-min", "NaN", "--seeds", "0"], "sigma")
    smp("sigma-max inf", ["--sigma-max", "inf", "--seeds", "0"], "sigma")
    smp("sigma-min negative", ["--sigma-min=-1", "--seeds", "0"], "sigma")
    smp("rho 0", ["--rho", "0", "--seeds", "0"], "rho")
    smp("batch 0", ["--batch", "0", "--seeds", "0"], "batch")
    smp("class 99", ["--class", "99", "--seeds", "0"], "class")
    smp("unknown solver", ["--solver", "magic", "--seeds", "0"], "solver")
    bad_lat = safetensors(t / "latents.safetensors", {"latents": ("F32", [1, 1, 1, 1], f32([0]))})
    smp("latents wrong shape", ["--latents", str(bad_lat)], "latents")
    # -- edm train: data and flags
    bomb = t / "bomb-data"
    bomb.mkdir()
    gz_stream(bomb / "train-images-idx3-ubyte.gz", idx_header([10, 28, 28]), 200 << 20)
    gz_stream(bomb / "train-labels-idx1-ubyte.gz", idx_header([10]) + bytes(10), 0)
    huge = t / "huge-data"
    huge.mkdir()
    gz_stream(huge / "train-images-idx3-ubyte.gz", idx_header([4_000_000_000, 28, 28]), 0)
    gz_stream(huge / "train-labels-idx1-ubyte.gz", idx_header([10]) + bytes(10), 0)
    badmagic = t / "badmagic-data"
    badmagic.mkdir()
    (badmagic / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04" + bytes(100)))
    (badmagic / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_header([10]) + bytes(10)))
    trn = lambda name, data, extra, expect=None: c.append(  # noqa: E731
        (f"edm train: {name}", [edm, "train", "--data", str(data), "--out", str(t / "runs" / name.replace(" ", "_")), "--kimg", "0.001", "--batch", "2", *extra], expect)
    )
    trn("gzip idx inflating past its header", bomb, [], None)
    trn("idx declaring 4e9 x 28 x 28", huge, [], "ICLGDD_MAX_IDX_BYTES")
    trn("idx bad magic", badmagic, [], "magic")
    trn("data folder missing", t / "absent", [], None)
    trn("batch 0", badmagic, ["--batch", "0"], None)
    trn("kimg 0", badmagic, ["--kimg", "0"], None)
    cfgarch = edm_model(t / "train-arch", sigma_data=0)
    trn("--arch config with sigma_data 0", badmagic, ["--arch", str(cfgarch / "config.json")], "sigma_data")
    # -- fid: statistics files
    ref_ok = npz(t / "ok.npz", stats(4))
    fr = lambda name, a, b, expect=None: c.append((f"fid frechet: {name}", [fid, "frechet", str(a), str(b)], expect))  # noqa: E731
    huge_npz = npz(t / "huge.npz", {"mu.npy": npy([10**9], b""), "sigma.npy": npy([10**9, 10**9], b"")})
    fr("huge declared shape", huge_npz, ref_ok, "needs")
    fr("shape overflowing usize", npz(t / "overflow.npz", {"mu.npy": npy([2**62], b""), "sigma.npy": npy([2**62, 8], b"")}), ref_ok, "overflow")
    fr("int64 arrays", npz(t / "ints.npz", {"mu.npy": npy([1], bytes(8), "<i8"), "sigma.npy": npy([1, 1], bytes(8), "<i8")}), ref_ok, "dtype")
    fr("sigma not d x d", npz(t / "rect.npz", {"mu.npy": npy([2], bytes(16)), "sigma.npy": npy([2, 3], bytes(48))}), ref_ok, "sigma")
    fr("no mu", npz(t / "nomu.npz", {"sigma.npy": npy([1, 1], bytes(8))}), ref_ok, "mu")
    fr("not a zip", t / "ok.npz.txt", ref_ok, None)
    (t / "ok.npz.txt").write_text("mu sigma")
    fr("dimensions differ", npz(t / "d3.npz", stats(3)), ref_ok, None)
    fr("FIFO", fifo(t / "stats.fifo"), ref_ok, "FIFO")
    fr("/dev/zero", "/dev/zero", ref_ok, "character device")
    sbomb = zip_with_zeros(t / "sbomb.npz", "sigma.npy", 64 << 20, {"mu.npy": npy([1], bytes(8))})
    patch_zip_sizes(sbomb, "sigma.npy", 1000)
    fr("member inflating past its declared size", sbomb, ref_ok, "declared size")
    c.append(("fid calc: --ref huge declared shape", [fid, "calc", "--images", str(t), "--ref", str(huge_npz), "--num", "2"], None))
    # -- fid: images and the Inception network
    imgs = t / "imgs"
    imgs.mkdir()
    png(imgs / "huge.png", 100_000, 100_000)
    (imgs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    c.append(("fid features: PNG declaring 100000 x 100000", [fid, "features", "--images", str(imgs), "--output", out("f.st"), "--inception", str(t / "incept-absent.safetensors")], None))
    dzip = zip_with_zeros(t / "ds.zip", "00000/img00000000.png", 64 << 20)
    patch_zip_sizes(dzip, "00000/img00000000.png", 100)
    incept = safetensors(t / "incept.safetensors", {"w": ("F32", [1], f32([0]))})
    c.append(("fid features: dataset zip member bomb", [fid, "features", "--images", str(dzip), "--output", out("g.st"), "--inception", str(incept)], None))
    c.append(("fid ref: --data /dev/zero", [fid, "ref", "--data", "/dev/zero", "--dest", out("r.npz"), "--inception", str(incept)], None))
    ts_bomb = zip_with_zeros(t / "bomb.pt", "archive/data/0", 64 << 20, {"archive/data.pkl": b"\x80\x02}q\x00."})
    patch_zip_sizes(ts_bomb, "archive/data/0", 64)
    ts_big = zip_with_zeros(t / "big.pt", "archive/data/0", 1 << 20, {"archive/data.pkl": b"\x80\x02}q\x00."})
    patch_zip_sizes(ts_big, "archive/data/0", 3_000_000_000)
    deep = t / "deep.pt"
    with zipfile.ZipFile(deep, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02" + b"]" + b"(]" * 100_000 + b"e" * 100_000 + b".")
    for name, path in [("TorchScript storage bomb", ts_bomb), ("TorchScript storage declaring 3 GB", ts_big),
                       ("TorchScript pickle nested 100000 deep", deep), ("Inception not a zip", t / "ok.npz.txt"),
                       ("Inception is a FIFO", fifo(t / "incept.fifo"))]:
        c.append((f"fid features: {name}", [fid, "features", "--images", str(imgs), "--output", out("h.st"), "--inception", str(path)], None))
    # -- icl-probe: GGUF and HF configs (panics and stack overflows before #20)
    fwd_ids = input_ids(t / "ids.safetensors", 1, 4)
    fw = lambda name, model, ids=fwd_ids, expect=None: c.append(  # noqa: E731
        (f"icl-probe forward: {name}", [icl, "forward", "--model", str(model), "--input-ids", str(ids), "--output", out("o.st")], expect)
    )
    for name, change, expect in [
        ("0 attention heads", {"llama__attention__head_count": 0}, "head_count"),
        ("heads not dividing d", {"llama__attention__head_count": 3}, "multiple"),
        ("0 KV heads", {"llama__attention__head_count_kv": 0}, "kv"),
        ("rope dimension 0", {"llama__rope__dimension_count": 0}, "rot"),
        ("0 layers", {"llama__block_count": 0}, "layers"),
        ("vocab 0", {"llama__vocab_size": 0}, "vocab"),
        ("2^32-1 layers", {"llama__block_count": 0xFFFFFFFF}, None),
    ]:
        fw("GGUF " + name, gguf(t / (name.replace(" ", "_").replace("^", "") + ".gguf"), llama_kv(**change)), expect=expect)
    fw("GGUF metadata nested 100000 deep", gguf(t / "nested.gguf", [("general.architecture", "str", "llama"), ("x", "raw", nested_array(100_000))]), expect="nested")
    fw("GGUF array count 2^60", gguf(t / "count.gguf", [("x", "raw", struct.pack("<IIQ", 9, 4, 1 << 60))]), expect=None)
    fw("GGUF tensor count 2^40", gguf(t / "tensors.gguf", llama_kv(), tensors=1 << 40), expect=None)
    fw("GGUF truncated", t / "trunc.gguf", expect=None)
    (t / "trunc.gguf").write_bytes(struct.pack("<IIQ", 0x46554747, 3, 1))
    fw("GGUF bad magic", t / "magic.gguf", expect=None)
    (t / "magic.gguf").write_bytes(b"GGML" + bytes(100))
    fw("model is a FIFO", fifo(t / "model.gguf"), expect="FIFO")
    fw("model is /dev/zero", "/dev/zero", expect=None)
    for name, change, expect in [
        ("HF config 0 heads", {"num_attention_heads": 0}, "heads"),
        ("HF config heads not dividing d", {"num_attention_heads": 3, "head_dim": None}, "multiple"),
        ("HF config 0 KV heads", {"num_key_value_heads": 0}, "kv"),
        ("HF config head_dim 0", {"head_dim": 0}, "head"),
        ("HF config hidden_size 0", {"hidden_size": 0}, None),
        ("HF config rope_theta NaN", {"rope_parameters": {"rope_theta": "NaN", "rope_type": "default"}}, None),
    ]:
        fw(name, hf_model(t / ("hf-" + name.replace(" ", "_")), **change), expect=expect)
    hf_fifo = t / "hf-fifo"
    hf_fifo.mkdir()
    fifo(hf_fifo / "config.json")
    fw("HF config.json is a FIFO", hf_fifo, expect="FIFO")
    fw("1-million-token prompt", LLAMA_FIXTURE, input_ids(t / "long.safetensors", 1, 1_000_000), "ICL_PROBE_MAX_SEQ_LEN")
    fw("batch of 200000 x 64", LLAMA_FIXTURE, input_ids(t / "wide.safetensors", 200_000, 64), "ICL_PROBE_MAX_MEMORY_GIB")
    fw("token id past the vocabulary", LLAMA_FIXTURE, input_ids(t / "oov.safetensors", 1, 4, 5000), None)
    fw("negative token id", LLAMA_FIXTURE, input_ids(t / "negid.safetensors", 1, 4, -3), None)
    fw("input_ids is a FIFO", LLAMA_FIXTURE, fifo(t / "ids.fifo"), "FIFO")
    fw("input_ids float", LLAMA_FIXTURE, safetensors(t / "fids.safetensors", {"input_ids": ("F32", [1, 1], f32([1]))}), "int")
    c.append(("icl-probe predict: prompts FIFO", [icl, "predict", "--model", str(LLAMA_FIXTURE), "--prompts", str(fifo(t / "p.fifo")), "--output", out("p.jsonl")], None))
    c.extend(resume_cases(t, bins))
    return c


def tiny_fashion_mnist(d, n=4):
    d.mkdir()
    (d / "train-images-idx3-ubyte.gz").write_bytes(idx_header([n, 28, 28]) + bytes(i % 251 for i in range(n * 784)))
    (d / "train-labels-idx1-ubyte.gz").write_bytes(idx_header([n]).replace(bytes([0, 0, 8, 1]), bytes([0, 0, 8, 1])) + bytes(i % 10 for i in range(n)))
    return d


def resume_cases(t, bins):
    """Resuming `edm train` / `gdd train` on a finished run folder with other options (continued
    without a word before #20): each must be refused naming what differs. The first runs are made
    here; gdd's needs the EfficientNet-Lite0 asset in $ICLGDD_CACHE (its cases are skipped without)."""
    edm, gdd = str(bins / "edm"), str(bins / "gdd")
    fm = str(tiny_fashion_mnist(t / "fm"))
    run = str(t / "edm-run")
    base = ["train", "--outdir", run, "--data", fm, "--arch=tiny", "--batch=2", "--lr=0.001"]
    env = dict(os.environ, RUST_BACKTRACE="0")
    subprocess.run([edm] + base + ["--duration=0.000004"], check=True, capture_output=True, env=env)
    c = [
        ("edm train: resumed with another lr", [edm] + base[:-1] + ["--lr=0.002", "--duration=0.000008"], "lr (saved 0.001, given 0.002)"),
        ("edm train: resumed with another batch", [edm] + base[:-2] + ["--batch=4", "--lr=0.001", "--duration=0.000008"], "batch_size (saved 2, given 4)"),
        ("edm train: resumed with another architecture", [edm] + [a if a != "--arch=tiny" else "--arch=ddpmpp" for a in base] + ["--duration=0.000008"], "network."),
        ("gdd train: unknown preset", [gdd, "train", "--preset", "nonesuch", "--teacher", str(EDM_FIXTURE), "--data", fm, "--outdir", str(t / "out" / "preset")], "nonesuch"),
        ("gdd sample: batch 0", [gdd, "sample", "--network", str(EDM_FIXTURE), "--outdir", str(t / "out" / "gb0"), "--batch", "0"], "batch"),
    ]
    cache = os.environ.get("ICLGDD_CACHE")
    effnet = sorted(Path(cache, "efficientnet-lite0").glob("*.pth")) if cache else []
    if not effnet:
        print("gdd train resume cases skipped: no efficientnet-lite0 in $ICLGDD_CACHE", file=sys.stderr)
        return c
    imgs = t / "gdd-imgs"
    imgs.mkdir()
    for i in range(4):
        png(imgs / f"{i}.png", 16, 16, bytes(b"".join(b"\x00" + bytes((x * 16 + i * 40) % 256 for x in range(48)) for _ in range(16))), rgb=True)
    grun = str(t / "gdd-run")
    gbase = ["train", "--teacher", str(EDM_FIXTURE), "--data", str(imgs), "--outdir", grun, "--effnet", str(effnet[0]),
             "--d-res=32", "--no-fid", "--batch=2", "--lr=0.001"]
    subprocess.run([gdd] + gbase + ["--kimg=0.002"], check=True, capture_output=True, env=env)
    c += [
        ("gdd train: resumed with another lr", [gdd] + gbase[:-1] + ["--lr=0.002", "--kimg=0.004"], "lr (saved 0.001, given 0.002)"),
        ("gdd train: resumed with another batch", [gdd] + gbase[:-2] + ["--batch=4", "--lr=0.001", "--kimg=0.004"], "batch_size (saved 2, given 4)"),
        ("gdd train: resumed as GDD-I", [gdd] + gbase + ["--freeze=1", "--kimg=0.004"], "freeze"),
        ("gdd train: discriminator input 112 for EfficientNet-Lite0", [gdd] + [a.replace(grun, str(t / "out" / "d112")).replace("--d-res=32", "--d-res=112") for a in gbase] + ["--kimg=0.002"], "112"),
    ]
    return c


# ---------------------------------------------------------------- running


def classify(rc, stderr, timed_out):
    if timed_out:
        return "hang"
    if rc == 101 or "panicked" in stderr:
        return "panic"
    if rc in (134, 137, 139) or rc in (-signal.SIGABRT, -signal.SIGSEGV, -signal.SIGKILL, -signal.SIGBUS):
        return "abort"
    if rc == 0:
        return "accepted"
    return "refused" if stderr.strip() else "silent"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default=str(ROOT / "target/release"))
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--mem-gib", type=float, default=8.0, help="address-space limit per case")
    ap.add_argument("-k", default="", help="run only cases whose name contains this")
    ap.add_argument("-v", action="store_true", help="print every case's last stderr line")
    args = ap.parse_args()
    bins = Path(args.bin_dir)
    for b in ["edm", "fid", "icl-probe", "gdd"]:
        if not (bins / b).is_file():
            sys.exit(f"{bins / b} missing: cargo build --release -p edm-cli -p fid-cli -p icl-probe-cli -p gdd-cli")
    limit = int(args.mem_gib * (1 << 30))

    def preexec():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        os.setsid()

    counts = {}
    bad = []
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        t = Path(tmp)
        all_cases = [c for c in cases(t, bins) if args.k in c[0]]
        env = dict(os.environ, RUST_BACKTRACE="0", ICLGDD_CACHE=str(t / "no-cache"))
        start = time.time()
        for name, argv, expect in all_cases:
            t0 = time.time()
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=env, cwd=tmp, preexec_fn=preexec)
            try:
                _, err = p.communicate(timeout=args.timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                _, err = p.communicate()
                timed_out = True
            err = err.decode(errors="replace")
            kind = classify(p.returncode, err, timed_out)
            if kind == "refused" and expect and expect.lower() not in err.lower():
                kind = "refused (unexpected message)"
            counts[kind] = counts.get(kind, 0) + 1
            last = (err.strip().splitlines() or [""])[-1][:220]
            if kind != "refused" or args.v:
                print(f"{kind:>9}  {time.time() - t0:5.1f}s  {name}\n           rc={p.returncode}: {last}")
            if not kind.startswith("refused"):
                bad.append(name)
        print(f"\n{len(all_cases)} cases in {time.time() - start:.0f} s: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
