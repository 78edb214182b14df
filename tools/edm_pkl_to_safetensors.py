#!/usr/bin/env python3
"""Convert an official NVlabs/edm network pickle (.pkl) to the format edm-core reads:
OUT/model.safetensors (the EDMPrecond/VPPrecond/VEPrecond state_dict, EDM's own names, float32)
and OUT/config.json (the constructor's keyword arguments, EDM's names).

Needs torch and EDM's `dnnlib` and `torch_utils` on PYTHONPATH (clone NVlabs/edm), because EDM's
pickles embed their classes; only load pickles you trust: unpickling runs code.

    PYTHONPATH=/path/to/edm python tools/edm_pkl_to_safetensors.py edm-cifar10-32x32-cond-vp.pkl OUT_DIR
"""
import argparse
import json
import os
import pickle

import torch
from safetensors.torch import save_file

import dnnlib  # noqa: F401  (EDM's pickles reference it)

PRECONDS = {"EDMPrecond", "VPPrecond", "VEPrecond"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pkl", help="EDM network pickle (local path)")
    ap.add_argument("out", help="output folder")
    ap.add_argument("--key", default="ema", help="pickle entry holding the network (default: ema)")
    args = ap.parse_args()

    with open(args.pkl, "rb") as f:
        net = pickle.load(f)[args.key]
    cls = type(net).__name__
    if cls not in PRECONDS:
        raise SystemExit(f"unsupported preconditioner {cls} (edm-core supports {sorted(PRECONDS)})")

    # torch_utils.persistence keeps the constructor's keyword arguments of persistent classes.
    kwargs = dict(net.init_kwargs)
    config = {"precond": cls}
    for k, v in kwargs.items():
        if k == "model_kwargs":
            continue
        config[k] = v
    config.update(kwargs.get("model_kwargs", {}))
    config.setdefault("model_type", type(net.model).__name__)
    # JSON cannot hold inf; edm-core's default sigma_max is inf anyway.
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()
              if not (isinstance(v, float) and v == float("inf"))}

    state = {k: v.detach().to(torch.float32).contiguous() for k, v in net.state_dict().items()}
    os.makedirs(args.out, exist_ok=True)
    save_file(state, os.path.join(args.out, "model.safetensors"))
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    n = sum(v.numel() for k, v in net.named_parameters())
    print(f"{cls}/{config['model_type']}: {len(state)} tensors, {n / 1e6:.1f}M parameters -> {args.out}")


if __name__ == "__main__":
    main()
