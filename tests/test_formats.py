"""Tests for unlearning.formats: tiny fake data sets written in the exact on-disk formats."""
import builtins
import pickle

import numpy as np
import pytest
import scipy.io
from PIL import Image

from unlearning import formats
from unlearning.errors import DataError, UserError

N = 20  # images per split


def _pixels(rng, n, shape=(3072,)):
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _dump(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _one_line_error(fn, *args) -> str:
    with pytest.raises(DataError) as info:
        fn(*args)
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    assert isinstance(info.value, UserError)
    return msg


# ---------------------------------------------------------------- CIFAR
def make_cifar10(root, meta=True):
    rng = np.random.default_rng(0)
    d = root / "cifar-10-batches-py"
    batches = []
    for i in range(1, 6):
        x, y = _pixels(rng, 4), rng.integers(0, 10, 4).tolist()
        _dump(d / f"data_batch_{i}", {b"batch_label": b"x", b"data": x, b"labels": y})
        batches.append((x, y))
    xt, yt = _pixels(rng, N), rng.integers(0, 10, N).tolist()
    _dump(d / "test_batch", {b"data": xt, b"labels": yt})
    if meta:
        _dump(d / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    x = np.concatenate([b[0] for b in batches])
    y = sum((b[1] for b in batches), [])
    return x, y, xt, yt


def make_cifar100(root):
    rng = np.random.default_rng(1)
    d = root / "cifar-100-python"
    x, y = _pixels(rng, N), rng.integers(0, 100, N).tolist()
    xt, yt = _pixels(rng, N), rng.integers(0, 100, N).tolist()
    _dump(d / "train", {b"data": x, b"fine_labels": y, b"coarse_labels": [0] * N})
    _dump(d / "test", {b"data": xt, b"fine_labels": yt, b"coarse_labels": [0] * N})
    _dump(d / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]})
    return x, y, xt, yt


def test_cifar10_round_trip(tmp_path):
    x, y, xt, yt = make_cifar10(tmp_path)
    raw = formats.read("cifar10", tmp_path)
    assert raw.x_train.shape == (N, 3, 32, 32) and raw.x_train.dtype == np.uint8
    assert raw.y_train.shape == (N,) and raw.y_train.dtype == np.int64
    assert raw.x_test.shape == (N, 3, 32, 32) and raw.y_test.dtype == np.int64
    # The 3072 bytes of a row are the R, G, B planes in turn, each 32x32 row-major.
    np.testing.assert_array_equal(raw.x_train[:, 0].reshape(N, -1), x[:, :1024])
    np.testing.assert_array_equal(raw.x_train[:, 2].reshape(N, -1), x[:, 2048:])
    np.testing.assert_array_equal(raw.x_test.reshape(N, -1), xt)
    assert raw.y_train.tolist() == y and raw.y_test.tolist() == yt
    assert raw.num_classes == 10 and raw.classes == [f"c{i}" for i in range(10)]


def test_cifar10_meta_is_optional(tmp_path):
    make_cifar10(tmp_path, meta=False)
    assert formats.read("cifar10", str(tmp_path)).classes is None


def test_cifar100_round_trip(tmp_path):
    x, y, xt, yt = make_cifar100(tmp_path)
    raw = formats.read("cifar100", tmp_path)
    assert raw.x_train.shape == (N, 3, 32, 32) and raw.x_train.dtype == np.uint8
    np.testing.assert_array_equal(raw.x_train.reshape(N, -1), x)
    np.testing.assert_array_equal(raw.x_test.reshape(N, -1), xt)
    assert raw.y_train.tolist() == y and raw.y_test.tolist() == yt
    assert raw.num_classes == 100 and len(raw.classes) == 100 and raw.classes[7] == "f7"


def test_cifar_pickle_missing_key(tmp_path):
    make_cifar10(tmp_path)
    _dump(tmp_path / "cifar-10-batches-py" / "data_batch_3", {b"data": _pixels(np.random.default_rng(), 4)})
    msg = _one_line_error(formats.read, "cifar10", tmp_path)
    assert "data_batch_3" in msg and "labels" in msg


def test_cifar_torn_pickle(tmp_path):
    make_cifar100(tmp_path)
    p = tmp_path / "cifar-100-python" / "test"
    p.write_bytes(p.read_bytes()[:100])
    msg = _one_line_error(formats.read, "cifar100", tmp_path)
    assert str(p) in msg


def test_cifar_wrong_shape_and_labels(tmp_path):
    make_cifar100(tmp_path)
    d = tmp_path / "cifar-100-python"
    _dump(d / "train", {b"data": np.zeros((N, 100), np.uint8), b"fine_labels": [0] * N})
    assert "3072" in _one_line_error(formats.read, "cifar100", tmp_path)
    _dump(d / "train", {b"data": _pixels(np.random.default_rng(), N), b"fine_labels": [100] * N})
    assert "outside 0..99" in _one_line_error(formats.read, "cifar100", tmp_path)


def test_cifar_missing_folder_and_file(tmp_path):
    msg = _one_line_error(formats.read, "cifar10", tmp_path)
    assert "cifar-10-batches-py" in msg and str(tmp_path) in msg
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_5").unlink()
    assert "data_batch_5" in _one_line_error(formats.read, "cifar10", tmp_path)


# ---------------------------------------------------------------- SVHN
def make_svhn(folder):
    rng = np.random.default_rng(2)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split in ("train", "test"):
        x = rng.integers(0, 256, size=(32, 32, 3, N), dtype=np.uint8)
        y = np.arange(1, N + 1).reshape(N, 1) % 10 + 1  # labels 1..10, as SVHN stores them
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y.astype(np.uint8)})
        out[split] = (x, y)
    return out


@pytest.mark.parametrize("sub", ["", "svhn"])
def test_svhn_round_trip(tmp_path, sub):
    data = make_svhn(tmp_path / sub if sub else tmp_path)
    raw = formats.read("svhn", tmp_path)
    for xs, ys, split in ((raw.x_train, raw.y_train, "train"), (raw.x_test, raw.y_test, "test")):
        x, y = data[split]
        assert xs.shape == (N, 3, 32, 32) and xs.dtype == np.uint8 and xs.flags.c_contiguous
        assert ys.dtype == np.int64 and ys.shape == (N,)
        # pixel (row 5, col 7, channel 1) of image 3
        assert xs[3, 1, 5, 7] == x[5, 7, 1, 3]
        np.testing.assert_array_equal(xs, x.transpose(3, 2, 0, 1))
        np.testing.assert_array_equal(ys, np.where(y[:, 0] == 10, 0, y[:, 0]))
        assert 10 not in ys and 0 in ys
    assert raw.num_classes == 10


def test_svhn_missing_and_corrupt(tmp_path):
    msg = _one_line_error(formats.read, "svhn", tmp_path)
    assert "train_32x32.mat" in msg and str(tmp_path) in msg
    make_svhn(tmp_path)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8)})
    assert "lacks variable y" in _one_line_error(formats.read, "svhn", tmp_path)
    (tmp_path / "test_32x32.mat").write_bytes(b"not a mat file at all")
    assert "test_32x32.mat" in _one_line_error(formats.read, "svhn", tmp_path)


# ---------------------------------------------------------------- TinyImageNet
WNIDS = ["n03", "n01", "n02"]  # deliberately unsorted in wnids.txt: the index follows sorted order


def make_tiny(root):
    """Train: 4 images per class; val: 6 images. Pixel value encodes the class; one val image is gray."""
    d = root / "tiny-imagenet-200"
    (d / "val" / "images").mkdir(parents=True)
    (d / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for w in WNIDS:
        (d / "train" / w / "images").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (64, 64), (40 * int(w[-1]), 10 * i, 200)).save(
                d / "train" / w / "images" / f"{w}_{i}.JPEG", quality=100)
    lines, expect = [], []
    for i in range(6):
        w = WNIDS[i % 3]
        name = f"val_{i}.JPEG"
        if i == 4:
            Image.new("L", (64, 64), 123).save(d / "val" / "images" / name, quality=100)
        else:
            rgb = (40 * int(w[-1]), 5, 60)
            Image.new("RGB", (64, 64), rgb).save(d / "val" / "images" / name, quality=100)
        lines.append(f"{name}\t{w}\t0\t0\t63\t63")
        expect.append(sorted(WNIDS).index(w))
    (d / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return d, expect


def test_tinyimagenet_round_trip_and_cache(tmp_path):
    d, expect = make_tiny(tmp_path)
    raw = formats.read("tinyimagenet", tmp_path)
    assert raw.x_train.shape == (12, 3, 64, 64) and raw.x_train.dtype == np.uint8
    assert raw.x_test.shape == (6, 3, 64, 64) and raw.y_test.dtype == np.int64
    assert raw.num_classes == 3 and raw.classes == ["n01", "n02", "n03"]
    assert raw.y_test.tolist() == expect
    # Train images of class k have red = 40 * (k + 1); JPEG at quality 100 is near-lossless.
    red = raw.x_train[:, 0].astype(int).mean(axis=(1, 2))
    np.testing.assert_allclose(red, 40 * (raw.y_train + 1), atol=3)
    assert sorted(raw.y_train.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    np.testing.assert_allclose(raw.x_test[4].astype(int), 123, atol=3)  # gray -> 3 equal channels
    assert (raw.x_test[4, 0] == raw.x_test[4, 1]).all() and (raw.x_test[4, 1] == raw.x_test[4, 2]).all()

    cache = d / formats.CACHE
    assert cache.is_file() and not list(d.glob("*.tmp"))
    for p in d.rglob("*.JPEG"):  # the second read must come from the cache alone
        p.unlink()
    again = formats.read("tinyimagenet", tmp_path)
    for a in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(again, a), getattr(raw, a))
    assert again.classes == raw.classes


def test_tinyimagenet_bad_cache_is_rebuilt(tmp_path):
    d, _ = make_tiny(tmp_path)
    (d / formats.CACHE).write_bytes(b"torn")
    raw = formats.read("tinyimagenet", tmp_path)
    assert raw.x_train.shape[0] == 12
    with np.load(d / formats.CACHE) as z:
        assert z["x_train"].shape == (12, 3, 64, 64)


def test_tinyimagenet_unwritable_or_failed_cache(tmp_path, monkeypatch):
    d, _ = make_tiny(tmp_path)

    def read_only(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(formats.tempfile, "mkstemp", read_only)
    assert formats.read("tinyimagenet", tmp_path).x_train.shape[0] == 12  # works without a cache
    assert not (d / formats.CACHE).exists()
    monkeypatch.undo()

    def disk_full(f, **arrays):
        f.write(b"PK partial")
        raise OSError("no space left on device")

    monkeypatch.setattr(formats.np, "savez", disk_full)
    assert formats.read("tinyimagenet", tmp_path).x_test.shape[0] == 6
    assert not (d / formats.CACHE).exists() and not list(d.glob("*.tmp"))  # no torn cache left


def test_tinyimagenet_stale_cache_is_rebuilt(tmp_path):
    d, _ = make_tiny(tmp_path)
    formats.read("tinyimagenet", tmp_path)
    (d / "wnids.txt").write_text("n01\nn02\n")
    for f in (d / "train" / "n03").rglob("*.JPEG"):
        f.unlink()
    (d / "train" / "n03" / "images").rmdir()
    (d / "val" / "val_annotations.txt").write_text("val_1.JPEG\tn01\t0\t0\t1\t1\n")
    raw = formats.read("tinyimagenet", tmp_path)
    assert raw.num_classes == 2 and raw.x_train.shape[0] == 8 and raw.y_test.tolist() == [0]


def test_tinyimagenet_errors(tmp_path):
    assert "tiny-imagenet-200" in _one_line_error(formats.read, "tinyimagenet", tmp_path)
    d, _ = make_tiny(tmp_path)
    (d / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    assert "line 1" in _one_line_error(formats.read, "tinyimagenet", tmp_path)
    (d / "val" / "val_annotations.txt").unlink()
    assert "val_annotations.txt" in _one_line_error(formats.read, "tinyimagenet", tmp_path)
    (d / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn01\t0\t0\t1\t1\n")
    Image.new("RGB", (32, 32)).save(d / "val" / "images" / "val_0.JPEG")
    assert "expected 64x64" in _one_line_error(formats.read, "tinyimagenet", tmp_path)
    (d / "val" / "images" / "val_0.JPEG").write_bytes(b"garbage")
    assert "val_0.JPEG" in _one_line_error(formats.read, "tinyimagenet", tmp_path)
    assert not (d / formats.CACHE).exists()  # failed reads never leave a cache behind


# ---------------------------------------------------------------- dispatch and download
def test_unknown_name_and_missing_root(tmp_path):
    msg = _one_line_error(formats.read, "imagenet", tmp_path)
    assert all(k in msg for k in ("cifar10", "cifar100", "svhn", "tinyimagenet", "mnist", "fashion_mnist"))
    missing = tmp_path / "nope"
    assert str(missing) in _one_line_error(formats.read, "cifar10", missing)


@pytest.fixture
def no_torchvision(monkeypatch):
    real_import = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "torchvision" or name.startswith("torchvision."):
            raise ImportError("No module named 'torchvision'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn"])
def test_download_without_torchvision(tmp_path, no_torchvision, name):
    msg = _one_line_error(formats.download, name, tmp_path)
    assert "torchvision is not installed" in msg and str(tmp_path) in msg


def test_download_tinyimagenet_and_unknown(tmp_path):
    assert "tiny-imagenet-200" in _one_line_error(formats.download, "tinyimagenet", tmp_path)
    assert "unknown" in _one_line_error(formats.download, "imagenet", tmp_path)
