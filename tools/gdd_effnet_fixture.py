"""Reference features of the frozen EfficientNet-Lite0 used by GDD's projected discriminator.

Builds timm's `tf_efficientnet_lite0` (TF "same" padding, BN eps 1e-3, ReLU6; what Zyriix/GDD's
`_make_pretrained('tf_efficientnet_lite0')` constructs), loads the real asset
`efficientnet-lite0-57934424.pth` (legacy torch format, loaded with weights_only=True, so nothing in
it runs) after renaming its keys to timm's, and writes the four feature maps GDD's
`_make_efficientnet` splits out (layer0 = stem + blocks[0:2], layer1 = blocks[2:3], layer2 = blocks[3:5],
layer3 = blocks[5:9]) for a fixed random input.

Usage: /work/venv/bin/python tools/gdd_effnet_fixture.py PATH/TO/efficientnet-lite0-57934424.pth OUT.safetensors
"""
import sys

import timm
import torch
from safetensors.torch import save_file

# timm stage layout of lite0 (block counts per stage); the .pth numbers blocks flat 0..15.
STAGES = [1, 2, 2, 3, 3, 4, 1]


def rename(sd):
    out = {}
    flat_to_stage = []
    for s, n in enumerate(STAGES):
        flat_to_stage += [(s, j) for j in range(n)]
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        parts = k.split(".")
        if parts[0] == "_blocks":
            i = int(parts[1])
            s, j = flat_to_stage[i]
            name, leaf = parts[2], parts[3]
            if i == 0:  # depthwise-separable block
                m = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
            else:  # inverted residual
                m = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                     "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
            out[f"blocks.{s}.{j}.{m[name]}.{leaf}"] = v
        else:
            m = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
                 "_fc": "classifier"}
            out[f"{m[parts[0]]}.{parts[1]}"] = v
    return out


def main():
    pth, out_path = sys.argv[1], sys.argv[2]
    sd = torch.load(pth, map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval().double()
    missing, unexpected = model.load_state_dict(rename(sd), strict=True), None
    g = torch.Generator().manual_seed(0)
    # 72x72 exercises both even (asymmetric TF padding) and odd (9 -> 5) stride-2 inputs.
    x = torch.rand(2, 3, 72, 72, generator=g, dtype=torch.float64) * 4 - 2
    with torch.no_grad():
        h = model.act1(model.bn1(model.conv_stem(x))) if hasattr(model, "act1") else model.bn1(model.conv_stem(x))
        feats = []
        for lo, hi in [(0, 2), (2, 3), (3, 5), (5, 9)]:
            for blk in model.blocks[lo:hi]:
                h = blk(h)
            feats.append(h)
        logits = model(x)
    tensors = {"x": x.float().contiguous(), "logits": logits.float().contiguous()}
    for i, f in enumerate(feats):
        tensors[f"feat{i}"] = f.float().contiguous()
        print(f"feat{i}", tuple(f.shape), float(f.abs().mean()))
    save_file(tensors, out_path)


if __name__ == "__main__":
    main()
