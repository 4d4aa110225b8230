"""Small MNIST-format (IDX) fakes, written byte by byte as LeCun's format defines it, independently of
unlearning.formats: magic 0, 0, type code, number of dimensions; each dimension a big-endian uint32;
the values row-major, big-endian."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
              np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")


def idx_bytes(a: np.ndarray) -> bytes:
    a = np.asarray(a)
    big = a.astype(a.dtype.newbyteorder(">")) if a.dtype.itemsize > 1 else a
    head = bytes([0, 0, TYPE_CODES[big.dtype], a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    return head + big.tobytes()


def write_idx(path: Path, a: np.ndarray | bytes, gz: bool | None = None) -> Path:
    """Write `a` (an array, or raw bytes as they are) to `path`, gzipped when its name ends in .gz."""
    data = a if isinstance(a, bytes) else idx_bytes(a)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz if gz is not None else path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def fake_arrays(n_train: int = 60, n_test: int = 20, seed: int = 0):
    """(x_train, y_train, x_test, y_test): uint8 28x28 images whose mean brightness depends on the
    class (so a model can learn something), labels cycling through all ten classes."""
    rng = np.random.default_rng(seed)
    out = []
    for n in (n_train, n_test):
        y = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(y)
        x = np.clip(rng.normal(20 + 22 * y[:, None, None], 30, size=(n, 28, 28)), 0, 255).astype(np.uint8)
        out += [x, y]
    return tuple(out)


def make_fake(root: Path, n_train: int = 60, n_test: int = 20, gz: bool = True, sub: str = "",
              seed: int = 0):
    """The four files of an MNIST/Fashion-MNIST root (under root/sub); returns the arrays written."""
    arrays = fake_arrays(n_train, n_test, seed)
    for name, a in zip(FILES, arrays):
        write_idx(root / sub / (name + (".gz" if gz else "")), a)
    return arrays
