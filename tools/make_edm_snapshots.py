#!/usr/bin/env python3
"""Make tiny EDM training snapshots (network-snapshot-*.pkl) with NVlabs/edm's own code, for the tests of
`edm convert` (crates/edm-core/tests/convert.rs).

Each snapshot is written exactly as EDM's training loop writes one (training/training_loop.py):
`pickle.dump(dict(ema=..., loss_fn=..., augment_pipe=..., dataset_kwargs=...), f)` with the modules
deep-copied, set to eval, moved to the CPU. The networks are built through `dnnlib.util.construct_class_by_name`
with the keyword arguments train.py passes for each architecture, only with tiny channel counts, and every
parameter is then redrawn at random (EDM zero-initialises some layers; a zero layer could hide a conversion
error). Next to each `NAME.pkl` the script writes `NAME_expected.safetensors` with fixed inputs and EDM's output:

  x [4,C,R,R], sigma [4], class_labels [4,L] (L = 0 when unconditional), augment_labels [4,A] (A = 0 without
  augmentation), denoised_f32 (EDM's forward, which runs in float32 on the CPU whatever the input dtype)

Run (EDM's code is data for this script, never part of the project):

    git clone https://github.com/NVlabs/edm /tmp/edm
    EDM_REPO=/tmp/edm python tools/make_edm_snapshots.py crates/edm-core/tests/fixtures/edm_snapshots
"""
import copy
import os
import pickle
import sys

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.environ.get("EDM_REPO", "/tmp/edm"))
import dnnlib  # noqa: E402

# name: (precond class, interface kwargs, architecture kwargs as train.py sets them, shrunk)
NETS = {
    # train.py --cond=1 --arch=ncsnpp --precond=ve --augment=0.12 (CIFAR-10's VE configuration)
    "ncsnpp_cond_ve": ("training.networks.VEPrecond", dict(img_resolution=8, img_channels=3, label_dim=10),
                       dict(model_type="SongUNet", embedding_type="fourier", encoder_type="residual",
                            decoder_type="standard", channel_mult_noise=2, resample_filter=[1, 3, 3, 1],
                            model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4],
                            dropout=0.13, augment_dim=9, use_fp16=False)),
    # train.py --arch=ddpmpp --precond=vp (unconditional, no augmentation)
    "ddpmpp_vp": ("training.networks.VPPrecond", dict(img_resolution=8, img_channels=3, label_dim=0),
                  dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard",
                       decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1],
                       model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4],
                       dropout=0.1, use_fp16=False)),
    # train.py --cond=1 --arch=adm --precond=edm (ImageNet-64's configuration). ADM's attention needs 64
    # channels per head, more than a fixture of a few hundred KB holds, so these blocks have none (the
    # golden tests of the network itself cover ADM attention).
    "adm_cond_edm": ("training.networks.EDMPrecond", dict(img_resolution=8, img_channels=3, label_dim=10),
                     dict(model_type="DhariwalUNet", model_channels=8, channel_mult=[1, 2], num_blocks=1,
                          attn_resolutions=[4], dropout=0.1, use_fp16=False)),
}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for i, (name, (cls, iface, arch)) in enumerate(NETS.items()):
        torch.manual_seed(100 + i)
        net = dnnlib.util.construct_class_by_name(class_name=cls, **arch, **iface)
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn_like(p) * 0.2)
        loss_fn = dnnlib.util.construct_class_by_name(class_name="training.loss.EDMLoss")
        augment_pipe = dnnlib.util.construct_class_by_name(
            class_name="training.augment.AugmentPipe", p=0.12, xflip=1e8, yflip=1, scale=1, rotate_frac=1,
            aniso=1, translate_frac=1) if arch.get("augment_dim") else None
        dataset_kwargs = dict(class_name="training.dataset.ImageFolderDataset", path="datasets/tiny.zip",
                              use_labels=iface["label_dim"] > 0, xflip=False, cache=True, resolution=8,
                              max_size=1000)
        data = dict(ema=net, loss_fn=loss_fn, augment_pipe=augment_pipe, dataset_kwargs=dataset_kwargs)
        for key, value in data.items():
            if isinstance(value, torch.nn.Module):
                data[key] = copy.deepcopy(value).eval().requires_grad_(False).cpu()
        with open(os.path.join(out, f"{name}.pkl"), "wb") as f:
            pickle.dump(data, f)

        # Fixed inputs and EDM's output.
        g = torch.Generator().manual_seed(7)
        r, c, l = iface["img_resolution"], iface["img_channels"], iface["label_dim"]
        a = arch.get("augment_dim", 0)
        x = torch.randn(4, c, r, r, generator=g)
        sigma = torch.tensor([0.002, 0.5, 10.0, 80.0])
        labels = torch.zeros(4, l)
        if l:
            labels[torch.arange(4), torch.tensor([0, 3, 7, 9])] = 1
        aug = torch.randn(4, a, generator=g) * 0.5 if a else torch.zeros(4, 0)
        kw = dict(augment_labels=aug) if a else {}
        ema = data["ema"]
        with torch.no_grad():
            d32 = ema(x, sigma, labels if l else None, **kw).float()
        save_file(dict(x=x, sigma=sigma, class_labels=labels, augment_labels=aug,
                       denoised_f32=d32.contiguous()),
                  os.path.join(out, f"{name}_expected.safetensors"))
        n = sum(p.numel() for p in net.parameters())
        print(f"{name}: {type(net).__name__}/{arch['model_type']}, {n} parameters, "
              f"{os.path.getsize(os.path.join(out, name + '.pkl'))} bytes")


if __name__ == "__main__":
    np.random.seed(0)
    main()
