"""A user's data set as files (.npz arrays, an image folder per class): read without unpickling, the
same tensors back as were written, and every malformed input one DataError line."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from tests.plugin_util import digits_npz, write
from unlearning.data import DataConfig, load_dataset, missing_root
from unlearning.errors import DataError, UserError


def npz_config(path, **kw) -> DataConfig:
    return DataConfig(name="npz", root=str(path), **kw)


def test_npz_round_trip_with_a_given_validation_set(tmp_path):
    a = digits_npz(tmp_path / "d.npz", with_val=True)
    ds = load_dataset(npz_config(tmp_path / "d.npz"))
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(ds, f"x_{split}")[:, 0], torch.from_numpy(a[f"x_{split}"]))
        assert torch.equal(getattr(ds, f"y_{split}"), torch.from_numpy(a[f"y_{split}"]))
    assert ds.num_classes == 10 and ds.x_train.dtype == torch.uint8 and ds.in_shape == (1, 8, 8)
    x = a["x_train"] / 255.0
    assert ds.mean == pytest.approx((x.mean(),)) and ds.std == pytest.approx((x.std(),))
    assert (ds.crop_pad, ds.flip) == (0, False)
    assert load_dataset(npz_config(tmp_path / "d.npz", augment=True)).crop_pad == 1  # side 8 // 8


def test_npz_without_validation_holds_it_out_like_every_data_set(tmp_path):
    a = digits_npz(tmp_path / "d.npz")
    ds = load_dataset(npz_config(tmp_path / "d.npz", val_fraction=0.2, seed=3))
    assert len(ds.y_train) + len(ds.y_val) == len(a["y_train"])
    assert abs(len(ds.y_val) - 0.2 * len(a["y_train"])) <= 10  # 20% of each class, rounded per class
    rows = {r.tobytes() for r in a["x_train"]}
    assert all(r.numpy().tobytes() in rows for r in ds.x_val[:, 0])
    again = load_dataset(npz_config(tmp_path / "d.npz", val_fraction=0.2, seed=4))
    assert not torch.equal(again.y_val, ds.y_val)  # the hold-out follows data.seed


GOOD = {"x_train": np.zeros((6, 1, 4, 4), np.uint8), "y_train": np.array([0, 1, 2, 0, 1, 2]),
        "x_test": np.zeros((3, 1, 4, 4), np.uint8), "y_test": np.array([0, 1, 2])}


@pytest.mark.parametrize("change, needle", [
    ({"x_train": np.zeros((6, 4), np.uint8)}, "x_train has shape (6, 4); expected (N, C, H, W)"),
    ({"x_train": np.zeros((6, 8, 8, 3), np.uint8), "x_test": np.zeros((3, 8, 8, 3), np.uint8)},
     "channels last"),
    ({"x_train": np.zeros((6, 1, 4, 4), np.int64)}, "x_train has dtype int64; expected uint8"),
    ({"x_test": np.zeros((3, 1, 5, 5), np.uint8)}, "x_test images are (1, 5, 5)"),
    ({"x_train": np.full((6, 1, 4, 4), np.nan, np.float32)}, "x_train holds NaN"),
    ({"y_train": np.array([0.0, 1, 2, 0, 1, 2])}, "y_train has dtype float64; expected integer"),
    ({"y_train": np.array([0, 1, 2, 0, 1])}, "x_train has 6 images but y_train has 5 labels"),
    ({"y_train": np.array([1, 2, 3, 1, 2, 3]), "y_test": np.array([1, 2, 3])}, "class 0 never occurs"),
    ({"y_test": np.array([0, 1, 7])}, "y_test holds label 7, outside 0..2"),
    ({"y_train": np.array([0, -1, 2, 0, 1, 2])}, "y_train holds label -1"),
    ({"x_test": np.zeros((0, 1, 4, 4), np.uint8), "y_test": np.zeros(0, np.int64)}, "x_test is empty"),
    ({"x_val": np.zeros((2, 1, 4, 4), np.uint8)}, "x_val and y_val come together"),
    ({"x_extra": np.zeros(3)}, "holds 'x_extra', not one of"),
    ({"y_test": None}, "lacks y_test"),
    ({"y_train": np.zeros((6, 1), np.int64)}, "y_train has shape (6, 1); expected (N,)"),
    ({"y_train": np.zeros(6, np.int64), "y_test": np.zeros(3, np.int64)}, "1 class; unlearning needs"),
])
def test_a_malformed_npz_is_one_data_error_line(tmp_path, change, needle):
    arrays = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as e:
        load_dataset(npz_config(tmp_path / "bad.npz"))
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert str(tmp_path / "bad.npz") in str(e.value)


class _Touch:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_an_npz_holding_pickled_objects_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    objects = np.empty(1, dtype=object)
    objects[0] = _Touch(str(marker))
    np.savez(tmp_path / "evil.npz", **{**GOOD, "x_train": objects})
    with pytest.raises(DataError, match="x_train in .* holds Python objects; refused"):
        load_dataset(npz_config(tmp_path / "evil.npz"))
    assert not marker.exists()
    np.load(tmp_path / "evil.npz", allow_pickle=True)["x_train"]  # the file is potent: loading it
    assert marker.exists()  # with pickles allowed runs the payload


def _npy(path):
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))


@pytest.mark.parametrize("make, needle, up_front", [
    (lambda p: None, "no such file", True),
    (lambda p: p.mkdir(), "a directory, not a file", True),
    (lambda p: os.mkfifo(p), "a FIFO (named pipe), not a file", True),
    (lambda p: p.write_bytes(b"not a zip at all"), "is not a readable .npz archive", False),
    (lambda p: p.write_bytes(pickle.dumps({"x_train": 1})), "is not a readable .npz archive", False),
    (_npy, "holds one array, not an .npz archive", False),
])
def test_a_root_that_is_not_an_npz_file_is_one_line(tmp_path, make, needle, up_front):
    path = tmp_path / "data.npz"
    make(path)
    with pytest.raises(DataError) as e:
        load_dataset(npz_config(path))
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)
    # what a spec check can say before anything runs (sweeps.spec.check_spec asks missing_root)
    assert (missing_root(npz_config(path)) is not None) == up_front


def test_npz_needs_a_root():
    assert missing_root(DataConfig(name="npz")) == "npz needs data.root: the .npz file"
    with pytest.raises(DataError, match="npz: needs data.root"):
        load_dataset(DataConfig(name="npz"))


# -- image folders --------------------------------------------------------------------------------

def write_pngs(root, split, images: dict[str, list[np.ndarray]]):
    from PIL import Image

    for cls, arrays in images.items():
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(arrays):
            Image.fromarray(a).save(root / split / cls / f"{i:03d}.png")


def test_an_image_folder_reads_back_the_pixels_written(tmp_path):
    rng = np.random.default_rng(0)
    img = lambda: rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)  # noqa: E731 - H 6, W 5, RGB
    train = {"cat": [img() for _ in range(4)], "dog": [img() for _ in range(3)]}
    test = {"cat": [img()], "dog": [img(), img()]}
    write_pngs(tmp_path, "train", train)
    write_pngs(tmp_path, "test", test)
    ds = load_dataset(DataConfig(name="image_folder", root=str(tmp_path), val_fraction=0.0))
    assert ds.in_shape == (3, 6, 5) and ds.num_classes == 2
    want_x = np.stack(train["cat"] + train["dog"]).transpose(0, 3, 1, 2)
    assert torch.equal(ds.x_train, torch.from_numpy(want_x))
    assert ds.y_train.tolist() == [0, 0, 0, 0, 1, 1, 1] and ds.y_test.tolist() == [0, 1, 1]
    assert torch.equal(ds.x_test[0], torch.from_numpy(test["cat"][0].transpose(2, 0, 1)))


def test_grey_image_folders_have_one_channel(tmp_path):
    grey = [np.full((4, 4), v, np.uint8) for v in (0, 50, 100)]
    write_pngs(tmp_path, "train", {"a": grey, "b": grey})
    write_pngs(tmp_path, "test", {"a": grey[:1]})
    ds = load_dataset(DataConfig(name="image_folder", root=str(tmp_path), val_fraction=0.0))
    assert ds.in_shape == (1, 4, 4) and ds.x_train[1, 0, 0, 0] == 50


@pytest.mark.parametrize("damage, needle", [
    (lambda r: write_pngs(r, "train", {"a": [np.zeros((5, 4, 3), np.uint8)]}), "every image must have "
     "the same size"),
    (lambda r: (r / "train" / "notes.txt").write_text("x"), "is not in a class folder"),
    (lambda r: (r / "train" / "a" / "x.gif").write_bytes(b"GIF89a"), "is not a .png, .jpg, .jpeg image"),
    (lambda r: write_pngs(r, "test", {"zebra": [np.zeros((4, 4, 3), np.uint8)]}),
     "is a class that train/ does not have"),
    (lambda r: (r / "train" / "empty").mkdir(), "holds no images"),
    (lambda r: (r / "train" / "a" / "torn.png").write_bytes(b"\x89PNG\r\n\x1a\n torn"), "cannot decode"),
    (lambda r: os.mkfifo(r / "train" / "a" / "pipe.png"), "a FIFO (named pipe), not a file"),
    (lambda r: __import__("shutil").rmtree(r / "test"), "test: no such folder"),
])
def test_a_malformed_image_folder_is_one_data_error_line(tmp_path, damage, needle):
    rgb = [np.zeros((4, 4, 3), np.uint8)] * 2
    write_pngs(tmp_path, "train", {"a": rgb, "b": rgb})
    write_pngs(tmp_path, "test", {"a": rgb})
    damage(tmp_path)
    with pytest.raises(DataError) as e:
        load_dataset(DataConfig(name="image_folder", root=str(tmp_path)))
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


# -- data sets from plug-ins, and the registry's name check ---------------------------------------

def test_a_plugin_data_set_is_selected_by_name_and_its_output_checked(tmp_path, registries):
    from unlearning.plugins import load_plugins

    write(tmp_path, "data_plugin.py", '''
import numpy as np
from unlearning import dataset_from_arrays, register_dataset

@register_dataset("stripes")
def stripes(cfg):
    x = np.zeros((40, 1, 4, 4), np.float32)
    y = np.arange(40) % 2
    x[y == 1, :, :, ::2] = 1.0
    return dataset_from_arrays(cfg, x[:30], y[:30], x[30:], y[30:])

@register_dataset("broken_data")
def broken(cfg):
    return {"x_train": np.zeros(3)}
''')
    [p] = load_plugins(["data_plugin.py"], base=tmp_path)
    assert p.data_sets == ("stripes", "broken_data")
    ds = load_dataset(DataConfig(name="stripes", val_fraction=0.2))
    assert ds.name == "stripes" and ds.num_classes == 2 and len(ds.y_val) == 6 and ds.in_shape == (1, 4, 4)
    with pytest.raises(DataError, match=r"data set 'broken_data' \(.*data_plugin.py\): its loader "
                                        r"returned a dict, not an unlearning.Dataset"):
        load_dataset(DataConfig(name="broken_data"))


def test_an_unknown_data_set_is_one_line_listing_the_known_ones():
    from unlearning.trial import load_trial_config

    with pytest.raises(UserError) as e:
        load_trial_config({"data": {"name": "imagenet"}})
    assert str(e.value).startswith("data.name: unknown data set 'imagenet'; known: ")
    assert "digits" in str(e.value) and "npz" in str(e.value) and "image_folder" in str(e.value)


# -- the disk formats: a FIFO is not a missing file ------------------------------------------------

def test_a_fifo_in_a_data_root_is_named_for_what_it_is(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    os.mkfifo(d / "data_batch_1")
    with pytest.raises(DataError, match=r"data_batch_1: a FIFO \(named pipe\), not a file"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))
    os.mkfifo(tmp_path / "train-images-idx3-ubyte")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: a FIFO \(named pipe\), not a file"):
        load_dataset(DataConfig(name="mnist", root=str(tmp_path)))


def test_a_fifo_given_as_a_spec_is_refused_not_read(tmp_path):
    from unlearning.config import read_yaml

    os.mkfifo(tmp_path / "spec.yaml")
    with pytest.raises(UserError, match=r"spec.yaml: a FIFO \(named pipe\), not a file"):
        read_yaml(tmp_path / "spec.yaml")
