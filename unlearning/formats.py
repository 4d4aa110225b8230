"""Readers for image data sets kept on a local disk in their standard distributed formats.

`read(name, root)` returns a `Raw` of numpy arrays: images uint8 (N, C, H, W), labels int64 (N,).
Layouts under `root` (what torchvision's downloads produce, or the official archives unpacked):

- cifar10:      cifar-10-batches-py/data_batch_1..5, test_batch (pickles; batches.meta optional)
- cifar100:     cifar-100-python/train, test (pickles; meta optional)
- svhn:         train_32x32.mat, test_32x32.mat (directly under root or under root/svhn/)
- mnist, fashion_mnist: the four IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte,
                t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each gzipped (.gz) or not, directly under
                root (the Debian package dataset-fashion-mnist installs them in
                /usr/share/datasets/fashion-mnist) or under root/FashionMNIST/raw, root/MNIST/raw
                (torchvision's download layout).
- tinyimagenet: tiny-imagenet-200/ with wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and
                val/val_annotations.txt; the val split is the test set (the official test is unlabelled).
                Decoded arrays are cached in tiny-imagenet-200/.unlearn_sweep_cache.npz (rebuilt when
                wnids.txt changes or the cache is unreadable; delete it after editing the images).

Every problem with the files (missing, torn, wrong shape) is a `DataError` with a one-line message.
"""
from __future__ import annotations

import gzip
import os
import pickle
import tempfile
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import cast

import numpy as np

from unlearning.errors import DataError
from unlearning.files import file_problem

CACHE = ".unlearn_sweep_cache.npz"


@dataclass(frozen=True)
class Raw:
    """One data set as read from disk: images uint8 (N, C, H, W), labels int64 (N,) in [0, num_classes)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    classes: list[str] | None = None


def _line(e: BaseException) -> str:
    """An exception as one short line (messages of pickle/scipy/PIL errors may span lines)."""
    return " ".join(f"{type(e).__name__}: {e}".split())[:200]


def _present(name: str, path: Path) -> bool:
    """True for a regular file, False when nothing is at `path`; DataError for anything else there (a
    FIFO or a device would block its reader forever; a folder is not the file)."""
    if not os.path.lexists(path):
        return False
    if (problem := file_problem(path)) is not None:
        raise DataError(f"{name}: {path}: {problem}")
    return True


_Split = tuple[np.ndarray, np.ndarray]  # one split: images, labels


def _check(name: str, x: np.ndarray, y: np.ndarray, num_classes: int, where: Path) -> _Split:
    """Validate one split so a torn file fails here, not as a shape error deep inside training."""
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(f"{name}: images in {where} have shape {x.shape} and dtype {x.dtype} "
                        "(expected uint8 N,C,H,W)")
    y = np.asarray(y).reshape(-1).astype(np.int64)
    if len(y) != len(x) or len(x) == 0:
        raise DataError(f"{name}: {where} has {len(x)} images and {len(y)} labels "
                        "(expected equal, non-zero)")
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"{name}: labels in {where} span {y.min()}..{y.max()}, outside 0..{num_classes - 1}")
    return np.ascontiguousarray(x), y


# ---------------------------------------------------------------- CIFAR (python pickles)
# What a CIFAR batch holds: a dict of bytes keys, lists of ints and bytes, and numpy arrays, which
# pickle rebuilds through exactly these callables. Any other global (os.system, builtins.eval, a
# class with a __reduce__) is refused before it is looked up, so a crafted file runs nothing.
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"refused {module}.{name}: a data batch holds only "
                                         "dicts, lists, bytes, numbers and numpy arrays")
        with warnings.catch_warnings():  # numpy 2 keeps numpy.core (named by old files) as a shim
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class("copyreg" if module == "copy_reg" else module, name)


def _pickle(name: str, path: Path) -> dict:
    if not _present(name, path):
        raise DataError(f"{name}: missing file {path}")
    try:
        with open(path, "rb") as f:  # written by Python 2: bytes keys
            d = _DataOnlyUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{name}: {path} is not a plain data batch ({e}); nothing in it was run") from None
    except Exception as e:
        raise DataError(f"{name}: cannot unpickle {path} ({_line(e)})") from e
    if not isinstance(d, dict):
        raise DataError(f"{name}: {path} holds a {type(d).__name__}, expected a dict")
    return d


def _cifar_split(name: str, files: list[Path], label_key: bytes, num_classes: int) -> _Split:
    xs, ys = [], []
    for p in files:
        d = _pickle(name, p)
        if b"data" not in d or label_key not in d:
            raise DataError(f"{name}: {p} lacks key {b'data' if b'data' not in d else label_key!r} "
                            "(corrupt or not the python version)")
        x = np.asarray(d[b"data"])
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
            raise DataError(f"{name}: {p} data has shape {x.shape} dtype {x.dtype} (expected N,3072 uint8)")
        xs.append(x.reshape(-1, 3, 32, 32))  # rows are stored R plane, G plane, B plane: already CHW
        ys.append(np.asarray(d[label_key]))
    return _check(name, np.concatenate(xs), np.concatenate(ys), num_classes, files[0].parent)


def _folder(name: str, root: Path, sub: str, what: str) -> Path:
    d = root / sub
    if not d.is_dir():
        raise DataError(f"{name}: no '{sub}' folder under {root} (expected {what}; "
                        "pass download=True with internet, or fix --data-root)")
    return d


# name -> (title, folder, train files, test file, label key, classes, meta file, class-names key)
_CIFAR = {
    "cifar10": ("CIFAR-10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                "test_batch", b"labels", 10, "batches.meta", b"label_names"),
    "cifar100": ("CIFAR-100", "cifar-100-python", ["train"], "test", b"fine_labels", 100, "meta",
                 b"fine_label_names"),
}


def _cifar(name: str, root: Path) -> Raw:
    title, sub, train, test, key, k, meta, names_key = _CIFAR[name]
    d = _folder(name, root, sub, f"the python version of {title}")
    names = _pickle(name, d / meta).get(names_key) if _present(name, d / meta) else None  # meta optional
    return Raw(*_cifar_split(name, [d / f for f in train], key, k),
               *_cifar_split(name, [d / test], key, k), k,
               None if names is None else [n.decode() if isinstance(n, bytes) else str(n) for n in names])


# ---------------------------------------------------------------- SVHN (MATLAB files)
def _svhn_split(path: Path) -> _Split:
    import scipy.io

    try:
        m = scipy.io.loadmat(path)
    except Exception as e:
        raise DataError(f"svhn: cannot read {path} ({_line(e)})") from e
    if "X" not in m or "y" not in m:
        raise DataError(f"svhn: {path} lacks variable {'X' if 'X' not in m else 'y'} (corrupt file?)")
    x, y = np.asarray(m["X"]), np.asarray(m["y"]).reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(f"svhn: {path} X has shape {x.shape} (expected 32,32,3,N)")
    y[y == 10] = 0  # SVHN labels digit 0 as 10
    return _check("svhn", x.transpose(3, 2, 0, 1), y, 10, path)  # (H,W,C,N) -> (N,C,H,W)


def _svhn(root: Path) -> Raw:
    for d in (root, root / "svhn"):
        if _present("svhn", d / "train_32x32.mat") and _present("svhn", d / "test_32x32.mat"):
            return Raw(*_svhn_split(d / "train_32x32.mat"), *_svhn_split(d / "test_32x32.mat"), 10,
                       [str(i) for i in range(10)])
    raise DataError(f"svhn: no train_32x32.mat and test_32x32.mat under {root} or {root / 'svhn'} "
                    "(pass download=True with internet, or fix --data-root)")


# ---------------------------------------------------------------- TinyImageNet (JPEG folders)
def _decode(path: Path) -> np.ndarray:
    from PIL import Image

    if (problem := file_problem(path)) is not None:
        raise DataError(f"tinyimagenet: {path}: {problem}")
    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"))  # a few images are grayscale
    except Exception as e:
        raise DataError(f"tinyimagenet: cannot decode {path} ({_line(e)})") from e
    if a.shape != (64, 64, 3):
        raise DataError(f"tinyimagenet: {path} is {a.shape[1]}x{a.shape[0]}, expected 64x64")
    return a


def _decode_all(paths: list[Path]) -> np.ndarray:
    out = np.empty((len(paths), 3, 64, 64), np.uint8)  # filled in place: no 2nd copy of 1.2 GB
    # PIL releases the GIL while decoding, so threads give a real speed-up on 100k small JPEGs.
    with ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4)) as pool:
        for i, a in enumerate(pool.map(_decode, paths)):
            out[i] = a.transpose(2, 0, 1)
    return out


def _tiny_from_images(d: Path, wnids: list[str]) -> dict:
    index = {w: i for i, w in enumerate(wnids)}
    train, y_train = [], []
    for w in wnids:
        files = sorted((d / "train" / w / "images").glob("*.JPEG"))
        if not files:
            raise DataError(f"tinyimagenet: no JPEG images in {d / 'train' / w / 'images'}")
        train += files
        y_train += [index[w]] * len(files)
    ann = d / "val" / "val_annotations.txt"
    if not _present("tinyimagenet", ann):
        raise DataError(f"tinyimagenet: missing file {ann} (the val labels)")
    test, y_test = [], []
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise DataError(f"tinyimagenet: {ann} line {n} has no known wnid in its second column")
        test.append(d / "val" / "images" / parts[0])
        y_test.append(index[parts[1]])
    return {"x_train": _decode_all(train), "y_train": np.array(y_train, np.int64),
            "x_test": _decode_all(test), "y_test": np.array(y_test, np.int64), "wnids": np.array(wnids)}


def _save_atomic(path: Path, arrays: dict) -> None:
    """Write to a temp file and rename, so a crash never leaves a torn cache; an unwritable root
    (a read-only shared data set) only costs the cache."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if not isinstance(e, OSError):
            raise


def _tiny(root: Path) -> Raw:
    d = _folder("tinyimagenet", root, "tiny-imagenet-200", "the unpacked tiny-imagenet-200.zip")
    if not _present("tinyimagenet", d / "wnids.txt"):
        raise DataError(f"tinyimagenet: missing file {d / 'wnids.txt'}")
    wnids = sorted((d / "wnids.txt").read_text().split())
    if not wnids:
        raise DataError(f"tinyimagenet: {d / 'wnids.txt'} lists no classes")
    arrays = None
    if _present("tinyimagenet", d / CACHE):
        try:
            with np.load(d / CACHE, allow_pickle=False) as z:  # a cache file never runs code
                arrays = {k: z[k] for k in z.files}
            if list(arrays["wnids"]) != wnids:  # wnids.txt changed: the cache is stale
                arrays = None
        except Exception:
            arrays = None  # unreadable cache: rebuild it from the images
    if arrays is None:
        arrays = _tiny_from_images(d, wnids)
        _save_atomic(d / CACHE, arrays)
    n = len(wnids)
    return Raw(*_check("tinyimagenet", arrays["x_train"], arrays["y_train"], n, d / "train"),
               *_check("tinyimagenet", arrays["x_test"], arrays["y_test"], n, d / "val"), n, wnids)


# ---------------------------------------------------------------- MNIST, Fashion-MNIST (IDX files)
# IDX (LeCun's MNIST format): magic bytes 0, 0, a type code, the number of dimensions; then each
# dimension as a big-endian uint32; then the values, row-major, big-endian.
_IDX_TYPES: dict[int, np.dtype] = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8),
                                   0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
                                   0x0E: np.dtype(">f8")}
# name -> (title, torchvision's folder, Debian package or None, default root or None)
IDX_SOURCES = {
    "fashion_mnist": ("Fashion-MNIST", "FashionMNIST", "dataset-fashion-mnist",
                      "/usr/share/datasets/fashion-mnist"),
    "mnist": ("MNIST", "MNIST", None, None),  # Debian ships no MNIST package (bookworm)
}
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")


def how_to_get(name: str) -> str:
    """Where the files of an IDX data set come from, as the end of an error line."""
    _, _, package, default = IDX_SOURCES[name]
    get = (f"install the Debian package {package} (apt-get install {package}, files in {default})"
           if package else f"no Debian package ships {IDX_SOURCES[name][0]}: give --data-root")
    return f"{get}, or set download=True with the vision extra"


def read_idx(path: str | Path) -> np.ndarray:
    """One IDX file as an array of its header's shape and type (read gzipped when the name ends in
    .gz). A torn or foreign file (bad gzip stream, magic, header, or a value count that disagrees
    with the header) is a one-line DataError naming the file."""
    path = Path(path)
    if (problem := file_problem(path)) is not None:
        raise DataError(f"cannot read IDX file {path}: {problem}")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a torn stream, EOFError
        raise DataError(f"cannot read IDX file {path} ({_line(e)})") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES or data[3] == 0:
        raise DataError(f"{path} is not an IDX file (magic {data[:4].hex() or 'missing'}; expected "
                        "0000 then a type code and the number of dimensions)")
    dtype, ndim = _IDX_TYPES[data[2]], data[3]
    head = 4 + 4 * ndim
    if len(data) < head:
        raise DataError(f"{path}: IDX header is torn ({len(data)} bytes, the header needs {head})")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    want = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - head != want:
        raise DataError(f"{path}: holds {len(data) - head} bytes of values but its header "
                        f"{'x'.join(map(str, dims))} needs {want} (torn or damaged file)")
    return np.frombuffer(data, dtype, offset=head).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_file(name: str, d: Path, stem: str) -> Path | None:
    for p in (d / stem, d / f"{stem}.gz"):  # the uncompressed file wins when both exist
        if _present(name, p):
            return p
    return None


def _idx_split(name: str, images: Path, labels: Path) -> _Split:
    x, y = read_idx(images), read_idx(labels)
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
        raise DataError(f"{name}: {images} holds {x.dtype} values of shape {x.shape} "
                        "(expected uint8 N x 28 x 28)")
    if y.dtype != np.uint8 or y.ndim != 1:
        raise DataError(f"{name}: {labels} holds {y.dtype} values of shape {y.shape} "
                        "(expected uint8 N labels)")
    if len(x) != len(y):
        raise DataError(f"{name}: {images.name} has {len(x)} images but {labels.name} has {len(y)} labels")
    return _check(name, x[:, None], y, 10, images)


def _idx(name: str, root: Path) -> Raw:
    tv = IDX_SOURCES[name][1]
    for d in (root, root / tv / "raw"):
        files = [_idx_file(name, d, stem) for stem in _IDX_FILES]
        if all(files):
            break
    else:
        missing = next(s for s, f in zip(_IDX_FILES, [_idx_file(name, root, s) for s in _IDX_FILES]) if not f)
        raise DataError(f"{name}: no {missing}[.gz] under {root} (nor under {root / tv / 'raw'}); "
                        f"{how_to_get(name)}")
    files_ = cast("list[Path]", files)  # all four found: the loop broke
    return Raw(*_idx_split(name, files_[0], files_[1]), *_idx_split(name, files_[2], files_[3]), 10)


_READERS: dict[str, Callable[[Path], Raw]] = {
    "cifar10": partial(_cifar, "cifar10"), "cifar100": partial(_cifar, "cifar100"),
    "svhn": _svhn, "tinyimagenet": _tiny,
    "mnist": partial(_idx, "mnist"), "fashion_mnist": partial(_idx, "fashion_mnist")}


def read(name: str, root: str | Path) -> Raw:
    """Read data set `name` (cifar10, cifar100, svhn, tinyimagenet, mnist, fashion_mnist) from `root`.

    Raises DataError (one line: the path and what is missing) on an unknown name, a missing root or
    file, or a file that is corrupt or of the wrong shape."""
    if name not in _READERS:
        raise DataError(f"unknown disk data set {name!r}; known: {', '.join(_READERS)}")
    root = Path(root).expanduser()
    if not root.is_dir():
        hint = f"; {how_to_get(name)}" if name in IDX_SOURCES else ""
        raise DataError(f"{name}: data root {root} does not exist or is not a folder{hint}")
    return _READERS[name](root)


def download(name: str, root: str | Path) -> None:
    """Fetch data set `name` into `root` with torchvision (needs internet and the 'vision' extra).

    Files already present are kept. TinyImageNet is not downloadable here: DataError says where to put it."""
    root = Path(root).expanduser()
    if name == "tinyimagenet":
        raise DataError(f"tinyimagenet: download is not supported; unpack tiny-imagenet-200.zip so that "
                        f"{root / 'tiny-imagenet-200'} holds wnids.txt, train/ and val/")
    if name not in _READERS:
        raise DataError(f"unknown disk data set {name!r}; known: {', '.join(_READERS)}")
    try:
        from torchvision import datasets  # optional: only needed to download
    except Exception as e:  # absent (ImportError), or built for another torch (RuntimeError)
        why = "is not installed" if isinstance(e, ImportError) else f"does not import ({_line(e)})"
        raise DataError(f"{name}: torchvision {why}; install the 'vision' extra "
                        f"or place the files under {root}") from None
    try:
        if name == "svhn":
            for split in ("train", "test"):
                datasets.SVHN(str(root), split=split, download=True)
        elif name in IDX_SOURCES:  # into root/<FashionMNIST|MNIST>/raw, where `read` looks
            cls = datasets.FashionMNIST if name == "fashion_mnist" else datasets.MNIST
            for train in (True, False):
                cls(str(root), train=train, download=True)
        else:
            cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
            for train in (True, False):
                cls(str(root), train=train, download=True)
    except Exception as e:  # no network, disk full, checksum mismatch
        raise DataError(f"{name}: download to {root} failed ({_line(e)})") from e
