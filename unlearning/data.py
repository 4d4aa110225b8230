"""Data sets as tensors: train/val/test held on the trial's device, batches gathered by index there,
augmentation done on the device (no DataLoader, no per-batch host transfer).

Sources: `digits` (scikit-learn's 8x8 handwriting, shipped with the package: the embedded default),
`synthetic` (CIFAR-shaped images with learnable class structure, any size: for benchmarks and tests),
`cifar10`, `cifar100`, `svhn`, `tinyimagenet` read from a local root, and `mnist`, `fashion_mnist`
read from their IDX files (unlearning.formats); Fashion-MNIST is found without configuration where the
Debian package dataset-fashion-mnist installs it. `npz` and `image_folder` read a user's own data from
files (unlearning.datafiles). Each source is a loader `(DataConfig) -> Dataset` registered with
`unlearning.register_dataset`, the door a plug-in's data sets use too.

Protocol (reference codebases, see docs): a validation set of `val_fraction` of each class is held out
of the official training set with `DataConfig.seed`; the official test set is the test set. Digits has
no official test set, so a stratified 20% is drawn first with the same seed. DeepUnlearn's protocol
(Cadet et al. 2024) is the options `val_rule="train_test_split"` (scikit-learn's unstratified
hold-out, their random_state 123 as `seed`), `channels=3` (grey copied to three channels) and
`resize=32`; their normalisation (0.2860, 0.3530) and flip are Fashion-MNIST's defaults here.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from unlearning.config import StrictModel
from unlearning.errors import DataError
from unlearning.files import file_problem, folder_problem
from unlearning.formats import IDX_SOURCES, how_to_get
from unlearning.registry import DATA_SETS, register_dataset

DISK_SETS = ("cifar10", "cifar100", "svhn", "tinyimagenet")
IDX_SETS = tuple(IDX_SOURCES)  # mnist, fashion_mnist: IDX files; fashion_mnist has a default root
FILE_SETS = ("npz", "image_folder")  # a user's data as files, read by unlearning.datafiles
BUILTIN_SETS = ("digits", "synthetic", *DISK_SETS, *IDX_SETS, *FILE_SETS)


class DataConfig(StrictModel):
    """Which data set, where it lives, and how validation is held out."""

    # any registered data set; the annotation lists the built-ins (what `--help` shows), the
    # validator accepts every name in the registry (plug-ins' too)
    name: Literal[BUILTIN_SETS] = "digits"  # type: ignore[valid-type]
    # folder holding the files of a disk data set (fashion_mnist: see data_root); npz: the .npz file;
    # image_folder: the folder holding train/ and test/
    root: str | None = None
    download: bool = False  # fetch with torchvision when missing (needs internet and the vision extra)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = 0  # the val (and digits test) hold-out; not a trial seed
    # stratified: `val_fraction` of each class (the CIFAR reference codebases); train_test_split:
    # scikit-learn's unstratified train_test_split(test_size=val_fraction, random_state=seed), the
    # train set kept in the order it returns (DeepUnlearn, whose forget draw depends on that order)
    val_rule: Literal["stratified", "train_test_split"] = "stratified"
    channels: Literal[1, 3] | None = None  # None = as stored; 3 = grey copied to three channels
    resize: int | None = Field(None, ge=4)  # square side to resize every image to (bilinear)
    # synthetic only
    n_train: int = Field(5000, ge=20)
    n_test: int = Field(1000, ge=10)
    num_classes: int = Field(10, ge=2)
    image_size: int = Field(32, ge=8)
    augment: bool | None = None  # None = the data set's convention (crop+flip for CIFAR-like images)

    @field_validator("name", mode="wrap")
    @classmethod
    def _registered(cls, name, handler):
        if isinstance(name, str) and name in DATA_SETS:
            return name
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(DATA_SETS))}")


@dataclass(frozen=True)
class Dataset:
    """Tensors of one data set. Images are NCHW, uint8 (0..255) or float (0..1); `prepare` turns a
    gathered batch into normalised float32."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pad: int = 0  # random-crop padding used by augmentation (0 = none)
    flip: bool = False

    def __repr__(self) -> str:
        return (f"Dataset({self.name}, train={len(self.y_train)}, val={len(self.y_val)}, "
                f"test={len(self.y_test)}, shape={self.in_shape}, classes={self.num_classes}, "
                f"device={self.device})")

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device: torch.device | str) -> "Dataset":
        fields = {k: getattr(self, k).to(device) for k in
                  ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
        return replace(self, **fields)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Raw stored pixels -> normalised float32 on the same device."""
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    @functools.cached_property
    def _digest(self) -> str:
        import hashlib

        h = hashlib.sha256(self.name.encode())
        for t in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def content_hash(self) -> str:
        """A digest of the tensors (for oracle cache keys): changes when the data change. Computed
        once per Dataset object (every trial asks; the tensors never change in place)."""
        return self._digest


def augment(x: torch.Tensor, pad: int, flip: bool, gen: torch.Generator | None) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip, per sample, on x's device, static shapes."""
    if pad <= 0 and not flip:
        return x
    n, _, h, w = x.shape
    dev = x.device
    if pad > 0:
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), device=dev, generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (n,), device=dev, generator=gen)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]  # n,1,h,1
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]  # n,1,1,w
        b = torch.arange(n, device=dev)[:, None, None, None]
        c = torch.arange(x.shape[1], device=dev)[None, :, None, None]
        x = padded[b, c, rows, cols]
    if flip:
        mask = torch.rand(n, device=dev, generator=gen) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


# ---------------------------------------------------------------------------------------------
# loading


def load_dataset(cfg: DataConfig, device: torch.device | str = "cpu") -> Dataset:
    """The data set of `cfg` on `device`. Cached per process and device: a long-lived trial actor
    reads and uploads its data once, and every later trial gathers batches on the device. The
    loader's result is checked (`check_dataset`): a plug-in's mistake is one DataError line."""
    # the loader is part of the key: a plug-in loaded anew (edited) is not served its old data
    return _on_device(cfg, DATA_SETS.lookup(cfg.name), str(torch.device(device)))


@functools.lru_cache(maxsize=4)
def _on_device(cfg: DataConfig, loader, device: str) -> Dataset:
    ds = _load_cached(cfg, loader)
    return ds if device == "cpu" else ds.to(device)


@functools.lru_cache(maxsize=4)
def _load_cached(cfg: DataConfig, loader) -> Dataset:
    ds = check_dataset(loader(cfg), cfg.name)
    if cfg.channels is not None or cfg.resize is not None:
        ds = _reshape_images(ds, cfg)
    if cfg.augment is False:
        ds = replace(ds, crop_pad=0, flip=False)
    elif cfg.augment is True and ds.crop_pad == 0 and not ds.flip:
        ds = replace(ds, crop_pad=max(1, ds.in_shape[-1] // 8))
    return ds


def check_dataset(ds, name: str) -> Dataset:
    """`ds` if it is a Dataset as the built-ins give it, else DataError (one line naming the data set
    and the first problem): images (N, C, H, W) uint8 or float, the same C, H, W in every split;
    labels int64 (N,) in 0..num_classes-1, as many as images; train and test not empty."""
    where = f"data set {name!r} ({DATA_SETS.origin(name)})" if name in DATA_SETS else f"data set {name!r}"
    if not isinstance(ds, Dataset):
        raise DataError(f"{where}: its loader returned a {type(ds).__name__}, not an unlearning.Dataset "
                        "(unlearning.dataset_from_arrays builds one)")
    if not (isinstance(ds.num_classes, int) and ds.num_classes >= 2):
        raise DataError(f"{where}: num_classes is {ds.num_classes!r}; expected an int >= 2")
    shape = None
    for split in ("train", "val", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            raise DataError(f"{where}: x_{split} and y_{split} must be torch tensors")
        if x.ndim != 4 or not (x.dtype == torch.uint8 or x.dtype.is_floating_point):
            raise DataError(f"{where}: x_{split} has shape {tuple(x.shape)} and dtype {x.dtype}; "
                            "expected (N, C, H, W), uint8 or float")
        if shape is not None and tuple(x.shape[1:]) != shape:
            raise DataError(f"{where}: x_{split} images are {tuple(x.shape[1:])}, x_train's {shape}")
        shape = tuple(x.shape[1:])
        if y.dtype != torch.int64 or y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{where}: y_{split} has shape {tuple(y.shape)} and dtype {y.dtype}; "
                            f"expected ({len(x)},) int64 labels")
        if len(y) == 0 and split != "val":
            raise DataError(f"{where}: the {split} set is empty")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= ds.num_classes):
            raise DataError(f"{where}: y_{split} spans {int(y.min())}..{int(y.max())}, outside "
                            f"0..{ds.num_classes - 1}")
    assert shape is not None  # set by the loop's first split
    if len(ds.mean) not in (1, shape[0]) or len(ds.std) != len(ds.mean) or min(ds.std) <= 0:
        raise DataError(f"{where}: mean {ds.mean} and std {ds.std} must have one value (or one per "
                        f"channel, {shape[0]}), std > 0")
    return ds


def _holdout(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of indices: (kept, held_out) with `fraction` of each class held out."""
    held = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = int(round(fraction * len(idx)))
        held.append(rng.choice(idx, size=k, replace=False))
    held_idx = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    kept = np.setdiff1d(np.arange(len(y)), held_idx)
    return kept, held_idx


def _reshape_images(ds: Dataset, cfg: DataConfig) -> Dataset:
    """DataConfig.resize and .channels applied to every stored image (once, at load time). Resizing
    is bilinear with antialiasing and, for uint8 images, rounded back to uint8, as PIL's
    Resize-then-ToTensor of DeepUnlearn's pipeline quantises."""
    c = ds.in_shape[0]
    if cfg.channels is not None and cfg.channels != c and c != 1:
        raise DataError(f"data.channels: {ds.name} has {c} channels; only grey images can be copied "
                        f"to {cfg.channels}")
    k = cfg.channels if cfg.channels is not None else c

    def reshape(x: torch.Tensor) -> torch.Tensor:
        if cfg.resize is not None and x.shape[-2:] != (cfg.resize, cfg.resize):
            chunks = []
            for part in x.split(8192):  # bounded memory on 70,000 images
                r = torch.nn.functional.interpolate(part.float(), size=(cfg.resize, cfg.resize),
                                                    mode="bilinear", align_corners=False, antialias=True)
                chunks.append(r.round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else r)
            x = torch.cat(chunks)
        return x.expand(-1, k, -1, -1).contiguous() if k != x.shape[1] else x

    def widen(stat: tuple[float, ...]) -> tuple[float, ...]:
        return stat * k if len(stat) == 1 else stat  # a grey statistic holds for each copy

    return replace(ds, x_train=reshape(ds.x_train), x_val=reshape(ds.x_val), x_test=reshape(ds.x_test),
                   mean=widen(ds.mean), std=widen(ds.std))


def _val_split(y_tr: np.ndarray, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """(kept, val) indices of the official training set, by `cfg.val_rule`."""
    if cfg.val_rule == "train_test_split" and cfg.val_fraction > 0:
        from sklearn.model_selection import train_test_split

        kept, val = train_test_split(np.arange(len(y_tr)), test_size=cfg.val_fraction,
                                     random_state=cfg.seed)
        return kept, val
    return _holdout(y_tr, cfg.val_fraction, np.random.default_rng(cfg.seed))


def _assemble(name, x_tr, y_tr, x_te, y_te, num_classes, cfg, mean, std, crop_pad, flip) -> Dataset:
    kept, val = _val_split(y_tr, cfg)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return Dataset(name, t(x_tr[kept]), t(y_tr[kept]).long(), t(x_tr[val]), t(y_tr[val]).long(),
                   t(x_te), t(y_te).long(), num_classes, mean, std, crop_pad, flip)


def _digits(cfg: DataConfig) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # 1797 x 1 x 8 x 8 in [0, 1]
    y = d.target.astype(np.int64)
    train, test = _holdout(y, 0.2, np.random.default_rng(cfg.seed + 1_000_003))
    return _assemble("digits", x[train], y[train], x[test], y[test], 10, cfg,
                     (0.3,), (0.4,), 0, False)


def _synthetic(cfg: DataConfig) -> Dataset:
    """CIFAR-shaped uint8 images: each class is a smooth random colour pattern plus per-image
    noise, brightness and shift, so a CNN learns it (not perfectly) and forgetting is observable."""
    g = torch.Generator().manual_seed(cfg.seed + 7)
    s, c = cfg.image_size, cfg.num_classes
    protos = torch.nn.functional.interpolate(torch.rand(c, 3, 4, 4, generator=g), size=(s, s),
                                             mode="bilinear", align_corners=False)

    def make(n):
        y = torch.randint(0, c, (n,), generator=g)
        x = protos[y] * (0.6 + 0.4 * torch.rand(n, 1, 1, 1, generator=g))
        x = torch.roll(x, shifts=int(torch.randint(-2, 3, (1,), generator=g)), dims=3)
        x = x + 0.25 * torch.randn(n, 3, s, s, generator=g)
        return (x.clamp(0, 1) * 255).to(torch.uint8).numpy(), y.numpy()

    x_tr, y_tr = make(cfg.n_train)
    x_te, y_te = make(cfg.n_test)
    return _assemble("synthetic", x_tr, y_tr, x_te, y_te, c, cfg, (0.5,) * 3, (0.25,) * 3, 4, True)


_STATS = {  # per-channel mean/std of the training images (commonly used values)
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 4, True),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 4, True),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), 4, False),
    "tinyimagenet": ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821), 8, True),
    # grey; DeepUnlearn's normalisation, and its only augmentation (a horizontal flip) as the default
    "fashion_mnist": ((0.2860,), (0.3530,), 0, True),
    "mnist": ((0.1307,), (0.3081,), 0, True),
}


def data_root(cfg: DataConfig) -> Path | None:
    """The folder a disk data set is read from: `cfg.root`, else the data set's packaged location
    (Fashion-MNIST: /usr/share/datasets/fashion-mnist, from the Debian package), else None."""
    if cfg.root is not None:
        return Path(cfg.root).expanduser()
    default = IDX_SOURCES[cfg.name][3] if cfg.name in IDX_SOURCES else None
    return Path(default) if default else None


def missing_root(cfg: DataConfig) -> str | None:
    """One line saying why the data root of an IDX set (`IDX_SETS`) or of a user's files
    (`FILE_SETS`) is unusable, or None. For checking a spec before anything runs; the files
    themselves are checked when read."""
    if cfg.name in FILE_SETS:
        want = "the .npz file" if cfg.name == "npz" else "the folder holding train/ and test/"
        if cfg.root is None:
            return f"{cfg.name} needs data.root: {want}"
        check = file_problem if cfg.name == "npz" else folder_problem
        problem = check(Path(cfg.root).expanduser())
        return None if problem is None else f"{cfg.root}: {problem} ({cfg.name} reads {want})"
    if cfg.name not in IDX_SETS or cfg.download:
        return None
    root = data_root(cfg)
    if root is None:
        return f"{cfg.name} needs a data root ({how_to_get(cfg.name)})"
    if not root.is_dir():
        return f"{root} is not a folder ({how_to_get(cfg.name)})"
    return None


def _disk(cfg: DataConfig) -> Dataset:
    from unlearning import formats

    root = data_root(cfg)
    hint = f"; {how_to_get(cfg.name)}" if cfg.name in IDX_SETS else ""
    if root is None:
        raise DataError(f"{cfg.name}: needs a data root (--data-root PATH or data.root){hint}")
    if cfg.download:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"{cfg.name}: cannot create the data root {root} to download into "
                            f"({formats._line(e)}); give a writable --data-root") from None
        formats.download(cfg.name, root)
    if not root.exists():
        raise DataError(f"{cfg.name}: data root {root} does not exist{hint}")
    raw = formats.read(cfg.name, root)
    mean, std, pad, flip = _STATS[cfg.name]
    return _assemble(cfg.name, raw.x_train, raw.y_train, raw.x_test, raw.y_test, raw.num_classes,
                     cfg, mean, std, pad, flip)


register_dataset("digits", _digits)
register_dataset("synthetic", _synthetic)
for _set in (*DISK_SETS, *IDX_SETS):
    register_dataset(_set, _disk)
