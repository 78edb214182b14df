"""Makes the small fixtures of crates/fid/tests/fixtures/fid_extra/ (run with the project venv).

- tiny_script.pt: torch.jit.save of a scripted module with two float32 parameters (one made from a
  transposed view, saved contiguous by torch), to check the TorchScript reader on a real archive.
- evil.pt: a zip laid out like a TorchScript archive whose data.pkl calls os.system when unpickled by
  Python; the Rust reader must refuse it with a typed error and run nothing.
- cifar_mini.tar.gz: CIFAR-10 "python version" layout (cifar-10-batches-py/data_batch_{1,2}, test_batch)
  with 3 + 2 (+1) random images, pickled the way the real files are (Python 2 cPickle, protocol 2:
  byte strings as BINSTRING, numpy arrays via numpy.core.multiarray._reconstruct). Python 3's pickler
  writes bytes differently, so the opcodes are emitted by hand below; pickle.load(..., encoding='bytes')
  reads them back, as it does the real files.
- cifar_mini_expected.npz: `images` [5,3,32,32] uint8 and `labels` [5] of data_batch_1 then _2.
"""
import io
import os
import pickle
import struct
import tarfile
import zipfile

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "fid", "tests", "fixtures", "fid_extra")
os.makedirs(OUT, exist_ok=True)


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4)
        self.b = torch.nn.Parameter(torch.arange(6, dtype=torch.float32).reshape(3, 2).t().contiguous() - 1)

    def forward(self, x):
        return x @ self.w.t() + self.b.sum()


torch.jit.save(torch.jit.script(Tiny()), os.path.join(OUT, "tiny_script.pt"))


class Evil:
    def __reduce__(self):
        return (os.system, ("echo this-must-never-run",))


with zipfile.ZipFile(os.path.join(OUT, "evil.pt"), "w") as z:
    z.writestr("archive/data.pkl", pickle.dumps({"net": Evil()}, protocol=2))
    z.writestr("archive/version", "3\n")


def py2_pickle(d):
    """Protocol-2 pickle of a dict of bytes keys → (bytes | list[int] | list[bytes] | uint8 ndarray)."""
    out = io.BytesIO()
    w = out.write

    def s(b):  # Python 2 str: SHORT_BINSTRING / BINSTRING
        if len(b) < 256:
            w(b"U" + bytes([len(b)]) + b)
        else:
            w(b"T" + struct.pack("<I", len(b)) + b)

    def i(v):
        w(b"K" + bytes([v]) if v < 256 else b"J" + struct.pack("<i", v))

    w(b"\x80\x02}(")
    for k, v in d.items():
        s(k)
        if isinstance(v, bytes):
            s(v)
        elif isinstance(v, list):
            w(b"](")
            for x in v:
                s(x) if isinstance(x, bytes) else i(x)
            w(b"e")
        else:
            a = np.ascontiguousarray(v, dtype=np.uint8)
            w(b"cnumpy.core.multiarray\n_reconstruct\n")
            w(b"cnumpy\nndarray\n")
            w(b"K\x00\x85U\x01b\x87R")  # (ndarray, (0,), 'b') -> REDUCE
            w(b"(K\x01")  # state: (1, shape, dtype, False, raw)
            w(b"(" + b"".join(b"M" + struct.pack("<H", n) for n in a.shape) + b"t")
            w(b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
            w(b"\x89")
            s(a.tobytes())
            w(b"tb")
    w(b"u.")
    return out.getvalue()


rng = np.random.default_rng(0)
batches = {
    "data_batch_1": (rng.integers(0, 256, (3, 3072), dtype=np.uint8), [3, 0, 9]),
    "data_batch_2": (rng.integers(0, 256, (2, 3072), dtype=np.uint8), [1, 7]),
    "test_batch": (rng.integers(0, 256, (1, 3072), dtype=np.uint8), [5]),
}
tar_path = os.path.join(OUT, "cifar_mini.tar.gz")
with tarfile.open(tar_path, "w:gz") as tar:
    for name, (data, labels) in batches.items():
        blob = py2_pickle({
            b"batch_label": b"mini " + name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [b"img_%d.png" % k for k in range(len(labels))],
        })
        back = pickle.loads(blob, encoding="bytes")
        assert (back[b"data"] == data).all() and back[b"labels"] == labels
        info = tarfile.TarInfo("cifar-10-batches-py/" + name)
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))

images = np.concatenate([batches["data_batch_1"][0], batches["data_batch_2"][0]]).reshape(5, 3, 32, 32)
labels = np.array(batches["data_batch_1"][1] + batches["data_batch_2"][1], dtype=np.uint8)
np.savez(os.path.join(OUT, "cifar_mini_expected.npz"), images=images, labels=labels)
print("wrote", sorted(os.listdir(OUT)))
