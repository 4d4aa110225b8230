"""A user's own data set given as files, read without running anything in them; and
`dataset_from_arrays`, the checks every array from outside passes (plug-in loaders use it too).

`data: {name: npz, root: path/to/data.npz}`: arrays `x_train`, `y_train`, `x_test`, `y_test` and,
optionally, `x_val`, `y_val` (otherwise `val_fraction` of the train set is held out, as for every data
set). Read with `allow_pickle=False`: an object array is refused, never unpickled; other names are
refused too (a misspelt `x_val` would otherwise be ignored).

`data: {name: image_folder, root: path/to/folder}`: `root/train/<class>/*.png` and
`root/test/<class>/*.png` (optionally `root/val/<class>/`); `.png`, `.jpg` and `.jpeg`, decoded with
Pillow (installed with matplotlib). The classes are train/'s sub-folders in sorted order (label 0 is
the first). Every image has the same size; grey if all are grey, else RGB.

Images: (N, C, H, W), or (N, H, W) for grey; uint8 (0..255) or float (0..1, finite). Labels: integers
0..K-1, each class of 0..K-1 present in the train set. Normalisation: each channel's mean and std over
the train images. Augmentation: none unless `data.augment: true` (a random crop, padding side/8).
Every problem is one DataError line naming the file and what is wrong.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearning.data import DataConfig, Dataset, _val_split
from unlearning.errors import DataError
from unlearning.files import file_problem, folder_problem
from unlearning.formats import _line
from unlearning.registry import register_dataset

NPZ_REQUIRED = ("x_train", "y_train", "x_test", "y_test")
NPZ_OPTIONAL = ("x_val", "y_val")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def dataset_from_arrays(cfg: DataConfig, x_train, y_train, x_test, y_test, x_val=None, y_val=None, *,
                        num_classes: int | None = None, mean: Sequence[float] | None = None,
                        std: Sequence[float] | None = None, crop_pad: int = 0, flip: bool = False,
                        source: str | None = None) -> Dataset:
    """A Dataset from numpy arrays (or CPU tensors), checked: images (N, C, H, W) or (N, H, W), uint8
    or finite float; labels integer, one per image, in 0..K-1. K is `num_classes`, else the largest
    train label + 1 with every class 0..K-1 present in y_train. Without x_val/y_val, `cfg`'s
    `val_fraction` of the train set is held out (`cfg.val_rule`, `cfg.seed`). `mean`/`std` default
    to each channel's over the train images. `source` names the origin in messages (default
    `cfg.name`). Raises DataError (one line) on the first problem."""
    src = source or cfg.name
    if (x_val is None) != (y_val is None):
        raise DataError(f"{src}: x_val and y_val come together (one is missing)")
    splits = {"train": (x_train, y_train), "test": (x_test, y_test)}
    if x_val is not None:
        splits["val"] = (x_val, y_val)
    arrays = {s: (_images(src, f"x_{s}", x), _labels(src, f"y_{s}", y)) for s, (x, y) in splits.items()}
    shape = arrays["train"][0].shape[1:]
    for s, (x, y) in arrays.items():
        if x.shape[1:] != shape:
            raise DataError(f"{src}: x_{s} images are {x.shape[1:]} (C, H, W), x_train's {shape}")
        if len(x) != len(y):
            raise DataError(f"{src}: x_{s} has {len(x)} images but y_{s} has {len(y)} labels")
        if x.dtype != arrays["train"][0].dtype:
            raise DataError(f"{src}: x_{s} is {x.dtype}, x_train {arrays['train'][0].dtype} (use one)")
    k = _classes(src, arrays, num_classes)
    x_tr, y_tr = arrays["train"]
    if "val" in arrays:
        kept, (x_va, y_va) = np.arange(len(y_tr)), arrays["val"]
    else:
        kept, val = _val_split(y_tr, cfg)
        x_va, y_va = x_tr[val], y_tr[val]
    if mean is None or std is None:
        mean, std = _channel_stats(x_tr)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return Dataset(cfg.name, t(x_tr[kept]), t(y_tr[kept]), t(x_va), t(y_va), t(arrays["test"][0]),
                   t(arrays["test"][1]), k, tuple(map(float, mean)), tuple(map(float, std)),
                   crop_pad, flip)


def _images(src: str, key: str, x) -> np.ndarray:
    x = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x)
    if x.dtype == object:
        raise DataError(f"{src}: {key} holds Python objects, not numbers")
    if x.ndim == 3:  # grey (N, H, W)
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{src}: {key} has shape {x.shape}; expected (N, C, H, W) or (N, H, W)")
    if x.shape[1] > 4 and x.shape[3] in (1, 3, 4):
        raise DataError(f"{src}: {key} has shape {x.shape}, channels last; store (N, C, H, W): "
                        "x.transpose(0, 3, 1, 2)")
    if len(x) == 0:
        raise DataError(f"{src}: {key} is empty")
    if np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise DataError(f"{src}: {key} holds NaN or infinite values")
    elif x.dtype != np.uint8:
        raise DataError(f"{src}: {key} has dtype {x.dtype}; expected uint8 (0..255) or float (0..1) "
                        "images")
    return x


def _labels(src: str, key: str, y) -> np.ndarray:
    y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{src}: {key} has dtype {y.dtype}; expected integer class labels")
    if y.ndim != 1:
        raise DataError(f"{src}: {key} has shape {y.shape}; expected (N,) labels")
    if len(y) and y.min() < 0:
        raise DataError(f"{src}: {key} holds label {y.min()}; labels are 0..K-1")
    return y.astype(np.int64, copy=False)


def _classes(src: str, arrays: dict, num_classes: int | None) -> int:
    y_tr = arrays["train"][1]
    k = int(num_classes) if num_classes is not None else int(y_tr.max()) + 1
    if k < 2:
        raise DataError(f"{src}: {k} class{'es' if k != 1 else ''}; unlearning needs at least 2")
    for s, (_, y) in arrays.items():
        if y.max() >= k:
            raise DataError(f"{src}: y_{s} holds label {y.max()}, outside 0..{k - 1}"
                            + (" (the classes of y_train)" if num_classes is None else ""))
    if num_classes is None:
        absent = np.setdiff1d(np.arange(k), y_tr)
        if len(absent):
            raise DataError(f"{src}: class {absent[0]} never occurs in y_train (labels span "
                            f"{y_tr.min()}..{y_tr.max()}); labels must be 0..K-1")
    return k


def _channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Each channel's mean and std over all pixels, in the 0..1 scale `Dataset.prepare` uses."""
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    s = np.zeros(x.shape[1])
    s2 = np.zeros(x.shape[1])
    for i in range(0, len(x), 4096):  # bounded memory: float64 copies of a few thousand images
        part = x[i:i + 4096].astype(np.float64) / scale
        s += part.sum(axis=(0, 2, 3))
        s2 += np.square(part).sum(axis=(0, 2, 3))
    n = len(x) * x.shape[2] * x.shape[3]
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0))
    return mean.tolist(), np.where(std > 1e-6, std, 1.0).tolist()  # a constant channel: left as is


def _root(cfg: DataConfig, want: str) -> Path:
    if cfg.root is None:
        raise DataError(f"{cfg.name}: needs data.root ({want})")
    return Path(cfg.root).expanduser()


# -- .npz -----------------------------------------------------------------------------------------

@register_dataset("npz")
def npz(cfg: DataConfig) -> Dataset:
    """x_train, y_train, x_test, y_test (and optionally x_val, y_val) from the .npz at `cfg.root`."""
    path = _root(cfg, "the .npz file")
    if (problem := file_problem(path)) is not None:
        raise DataError(f"npz: {path}: {problem}")
    try:
        z = np.load(path, allow_pickle=False)  # a pickle inside is refused, never run
    except Exception as e:  # noqa: BLE001 - torn zip, a pickle, not numpy at all
        raise DataError(f"npz: {path} is not a readable .npz archive ({_line(e)})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"npz: {path} holds one array, not an .npz archive of "
                        f"{', '.join(NPZ_REQUIRED)} (np.savez)")
    with z:
        names = set(z.files)
        if missing := [k for k in NPZ_REQUIRED if k not in names]:
            held = ", ".join(sorted(names)) or "nothing"
            raise DataError(f"npz: {path} lacks {missing[0]} (it holds {held})")
        if unknown := sorted(names - {*NPZ_REQUIRED, *NPZ_OPTIONAL}):
            raise DataError(f"npz: {path} holds {unknown[0]!r}, not one of "
                            f"{', '.join(NPZ_REQUIRED + NPZ_OPTIONAL)}")
        arrays: dict[str, Any] = {}  # x_*/y_* arguments of dataset_from_arrays
        for k in sorted(names):
            try:
                arrays[k] = z[k]
            except ValueError as e:  # an object array: would need unpickling
                raise DataError(f"npz: {k} in {path} holds Python objects; refused ({_line(e)})") from None
            except Exception as e:  # noqa: BLE001 - a torn member
                raise DataError(f"npz: cannot read {k} from {path} ({_line(e)})") from None
    return dataset_from_arrays(cfg, **arrays, source=f"npz {path}")


# -- image folders --------------------------------------------------------------------------------

def _decode(path: Path) -> np.ndarray:
    """One image as (H, W, 1) grey or (H, W, 3) RGB uint8."""
    from PIL import Image

    if (problem := file_problem(path)) is not None:
        raise DataError(f"image_folder: {path}: {problem}")
    try:
        with Image.open(path) as im:
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                raise DataError(f"image_folder: {path} has {im.mode} pixels (16 or 32 bits); save 8-bit "
                                "images")
            grey = im.mode in ("1", "L", "LA")
            return np.asarray(im.convert("L" if grey else "RGB")).reshape(im.height, im.width, -1)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - a torn or foreign file
        raise DataError(f"image_folder: cannot decode {path} ({_line(e)})") from None


def _split_files(split_dir: Path, classes: list[str] | None) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, classes) of one split folder; `classes` None: train, which defines them."""
    if (problem := folder_problem(split_dir)) is not None:
        raise DataError(f"image_folder: {split_dir}: {problem} (expected {split_dir.name}/<class>/*.png)")
    entries = sorted(p for p in split_dir.iterdir() if not p.name.startswith("."))
    if stray := [p for p in entries if not p.is_dir()]:
        raise DataError(f"image_folder: {stray[0]} is not in a class folder ({split_dir.name}/<class>/)")
    found = [p.name for p in entries]
    if classes is None:
        classes = found
    if not found:
        raise DataError(f"image_folder: {split_dir} has no class folders ({split_dir.name}/<class>/*.png)")
    files, labels = [], []
    for name in found:
        if name not in classes:
            raise DataError(f"image_folder: {split_dir / name} is a class that train/ does not have")
        images = sorted(p for p in (split_dir / name).iterdir() if not p.name.startswith("."))
        if odd := [p for p in images if p.suffix.lower() not in IMAGE_SUFFIXES]:
            raise DataError(f"image_folder: {odd[0]} is not a {', '.join(IMAGE_SUFFIXES)} image")
        if not images and split_dir.name == "train":
            raise DataError(f"image_folder: {split_dir / name} holds no images")
        files += images
        labels += [classes.index(name)] * len(images)
    return files, labels, classes


@register_dataset("image_folder")
def image_folder(cfg: DataConfig) -> Dataset:
    """root/train/<class>/*.png, root/test/<class>/*.png (and optionally root/val/<class>/)."""
    root = _root(cfg, "the folder holding train/ and test/")
    if (problem := folder_problem(root)) is not None:
        raise DataError(f"image_folder: {root}: {problem}")
    splits = {}
    files, labels, classes = _split_files(root / "train", None)
    splits["train"] = (files, labels)
    for split in ("test", "val"):
        if split == "test" or (root / split).exists():
            splits[split] = _split_files(root / split, classes)[:2]
    everything = [f for files, _ in splits.values() for f in files]
    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) + 4)) as pool:
        decoded = list(pool.map(_decode, everything))  # Pillow releases the GIL while decoding
    size = decoded[0].shape[:2]
    if bad := next((f for f, a in zip(everything, decoded) if a.shape[:2] != size), None):
        h, w = decoded[everything.index(bad)].shape[:2]
        raise DataError(f"image_folder: {bad} is {w}x{h}, {everything[0]} {size[1]}x{size[0]}; every "
                        "image must have the same size")
    channels = max(a.shape[2] for a in decoded)
    arrays: dict[str, Any] = {}  # x_*/y_* arguments of dataset_from_arrays
    i = 0
    for split, (files, labels) in splits.items():
        imgs = decoded[i:i + len(files)]
        i += len(files)
        x = np.stack([np.broadcast_to(a, (*size, channels)) for a in imgs]) if imgs else \
            np.zeros((0, channels, *size), np.uint8)
        arrays[f"x_{split}"] = x.transpose(0, 3, 1, 2) if imgs else x
        arrays[f"y_{split}"] = np.array(labels, np.int64)
    return dataset_from_arrays(cfg, **arrays, num_classes=len(classes), source=f"image_folder {root}")
