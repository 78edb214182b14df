"""Reference features of torchvision's vgg16_bn as GDD's projected discriminator uses it.

Zyriix/GDD (`feature_networks/pretrained_builder.py`, `_make_pretrained('vgg16_bn')`) splits
torchvision's `vgg16_bn().features` at indices [13, 23, 33, 43]:
layer0 = features[:13], layer1 = features[13:23], layer2 = features[23:33], layer3 = features[33:43]
(the last max-pool, index 43, is never run). The network is frozen in eval mode, so batch norms use
their running statistics. Its input is `Normalize(ImageNet mean, std)((x + 1) / 2)` for an image x in
[-1, 1] (`get_backbone_normstats`: vgg16_bn is in NORMALIZED_IMAGENET).

The full vgg16_bn state dict is 528 MB, too large for the repository, so the fixture is a
width-reduced VGG16-BN built with torchvision's own `make_layers` from the vgg16 'D' layout with every
channel count divided by 16 (same module indices, same names, same split points). Its batch-norm
affine parameters and running statistics are randomised (fixed seed) so that folding them is tested.
Only the `features.*` tensors are saved (the classifier is never used by the discriminator).

Writes into OUTDIR:
  vgg16_bn_w16.pth        the state dict, torch.save zip format (torch >= 1.6)
  vgg16_bn_w16_legacy.pth the same, legacy format (_use_new_zipfile_serialization=False)
  vgg16_bn_w16_partial.pth only `features.0.weight` (a missing-tensor error case)
  pth_broadcast_view{,_legacy}.pth  {"a": zeros(1).expand(2**40)} (stride 0), zip and legacy
  vgg16_bn_w16_features.safetensors
      x      [2,3,36,36]  images in [-1, 1]
      feat0..feat3        float64 forward of the normalised x through layer0..layer3, stored as float32

Usage: /work/venv/bin/python tools/make_vgg_fixture.py crates/dist-distill/tests/fixtures
"""
import os
import sys
from collections import OrderedDict

import torch
from safetensors.torch import save_file
from torchvision.models import vgg

SPLITS = [0, 13, 23, 33, 43]
WIDTH_DIVISOR = 16
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    cfg = [c if c == "M" else c // WIDTH_DIVISOR for c in vgg.cfgs["D"]]
    features = vgg.make_layers(cfg, batch_norm=True)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in features:
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
                m.running_mean.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    features.eval()
    # `features.N.*` names in an OrderedDict with `_metadata`, as `VGG.state_dict()` returns it.
    fsd = features.state_dict()
    sd = OrderedDict((f"features.{k}", v.clone()) for k, v in fsd.items())
    sd._metadata = OrderedDict(("features" + (f".{k}" if k else ""), v) for k, v in fsd._metadata.items())
    torch.save(sd, os.path.join(out, "vgg16_bn_w16.pth"))
    torch.save(sd, os.path.join(out, "vgg16_bn_w16_legacy.pth"), _use_new_zipfile_serialization=False)
    # A state dict that stops after the first conv weight (the loader must name the next tensor).
    torch.save({"features.0.weight": sd["features.0.weight"]}, os.path.join(out, "vgg16_bn_w16_partial.pth"))

    # A one-element storage viewed with stride 0 as 2^40 elements (a hostile or broadcast view: the
    # reader must refuse it rather than try to allocate 4 TiB).
    view = torch.zeros(1).expand(1 << 40)
    torch.save({"a": view}, os.path.join(out, "pth_broadcast_view.pth"))
    torch.save({"a": view}, os.path.join(out, "pth_broadcast_view_legacy.pth"), _use_new_zipfile_serialization=False)

    # 36 -> 18 -> 9 -> 4 (floor) -> 2: exercises an odd input to a max-pool.
    x = torch.rand(2, 3, 36, 36, generator=g, dtype=torch.float64) * 2 - 1
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    h = ((x + 1) / 2 - mean) / std
    f64 = features.double()
    tensors = {"x": x.float().contiguous()}
    with torch.no_grad():
        for i in range(4):
            h = f64[SPLITS[i]:SPLITS[i + 1]](h)
            tensors[f"feat{i}"] = h.float().contiguous()
    save_file(tensors, os.path.join(out, "vgg16_bn_w16_features.safetensors"))
    for k, v in tensors.items():
        print(k, list(v.shape))


if __name__ == "__main__":
    main()
