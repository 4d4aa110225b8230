"""Fashion-MNIST / MNIST from IDX files (fakes written in the real format, and the real files when the
Debian package is installed) and DeepUnlearn's protocol as options: split rule, input transform,
models, attack, objective terms, selection score and RTE."""
from __future__ import annotations

import builtins
import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.model_selection import train_test_split

from tests.idx_util import FILES, fake_arrays, idx_bytes, make_fake, write_idx
from unlearning import formats
from unlearning import metrics as M
from unlearning.data import DataConfig, data_root, load_dataset
from unlearning.errors import DataError, UserError
from unlearning.models import build_model, count_params
from unlearning.splits import SplitConfig, make_split

REAL = Path("/usr/share/datasets/fashion-mnist")
DU_DATA = dict(val_rule="train_test_split", val_fraction=0.15, seed=123)  # DeepUnlearn's hold-out
DU_SPLIT = dict(forget_fraction=0.1, rule="train_test_split", seed=123)


def one_line(fn, *args) -> str:
    with pytest.raises(DataError) as info:
        fn(*args)
    msg = str(info.value)
    assert msg and "\n" not in msg and isinstance(info.value, UserError)
    return msg


# ---------------------------------------------------------------- the IDX format
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, ">i2", ">i4", ">f4", ">f8"])
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trips_every_type(tmp_path, dtype, gz):
    a = (np.arange(30) - (0 if dtype == np.uint8 else 7)).astype(dtype).reshape(2, 3, 5)
    b = formats.read_idx(write_idx(tmp_path / ("x.idx.gz" if gz else "x.idx"), a))
    assert b.shape == (2, 3, 5) and b.dtype.isnative and np.array_equal(b, a)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name,sub", [("fashion_mnist", ""), ("fashion_mnist", "FashionMNIST/raw"),
                                      ("mnist", ""), ("mnist", "MNIST/raw")])
def test_data_set_round_trip_flat_and_torchvision_layouts(tmp_path, gz, name, sub):
    x, y, xt, yt = make_fake(tmp_path, 60, 20, gz=gz, sub=sub)
    raw = formats.read(name, tmp_path)
    assert raw.x_train.shape == (60, 1, 28, 28) and raw.x_train.dtype == np.uint8
    assert raw.y_train.dtype == np.int64 and raw.num_classes == 10
    assert np.array_equal(raw.x_train[:, 0], x) and np.array_equal(raw.y_train, y)
    assert np.array_equal(raw.x_test[:, 0], xt) and np.array_equal(raw.y_test, yt)


def test_uncompressed_file_wins_over_its_gz(tmp_path):
    x, *_ = make_fake(tmp_path, gz=True)
    write_idx(tmp_path / FILES[0], 255 - x)
    assert np.array_equal(formats.read("fashion_mnist", tmp_path).x_train[:, 0], 255 - x)


def _good(tmp_path) -> bytes:
    make_fake(tmp_path, gz=False)
    return (tmp_path / FILES[0]).read_bytes()


DAMAGE = {  # what is written as train-images (uncompressed unless the name says .gz) -> message
    "foreign magic": (lambda b: b"\x01" + b[1:], "not an IDX file"),
    "unknown type code": (lambda b: b[:2] + b"\x07" + b[3:], "not an IDX file"),
    "no dimensions": (lambda b: b[:3] + b"\x00" + b[4:], "not an IDX file"),
    "empty file": (lambda b: b"", "magic missing"),
    "torn header": (lambda b: b[:9], "header is torn"),
    "torn values": (lambda b: b[:-100], "torn or damaged"),
    "trailing bytes": (lambda b: b + b"\x00" * 5, "torn or damaged"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_files_are_one_line_errors(tmp_path, case):
    damage, expected = DAMAGE[case]
    path = tmp_path / FILES[0]
    path.write_bytes(damage(_good(tmp_path)))
    msg = one_line(formats.read, "fashion_mnist", tmp_path)
    assert expected in msg and str(path) in msg


@pytest.mark.parametrize("case", ["torn gzip stream", "not gzip at all"])
def test_damaged_gzip_is_a_one_line_error(tmp_path, case):
    make_fake(tmp_path, gz=True)
    path = tmp_path / (FILES[0] + ".gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if case == "torn gzip stream" else idx_bytes(np.zeros(3, np.uint8)))
    msg = one_line(formats.read, "fashion_mnist", tmp_path)
    assert "cannot read IDX file" in msg and path.name in msg


WRONG = {  # (file index, array) -> message
    "images not 28x28": (0, np.zeros((60, 27, 28), np.uint8), "expected uint8 N x 28 x 28"),
    "images not uint8": (0, np.zeros((60, 28, 28), ">i4"), "expected uint8 N x 28 x 28"),
    "labels not 1-D": (1, np.zeros((60, 2), np.uint8), "expected uint8 N labels"),
    "count mismatch": (1, np.zeros(59, np.uint8), "60 images but"),
    "label out of range": (3, np.full(20, 10, np.uint8), "outside 0..9"),
}


@pytest.mark.parametrize("case", sorted(WRONG))
def test_wrong_contents_are_one_line_errors(tmp_path, case):
    i, a, expected = WRONG[case]
    make_fake(tmp_path, gz=False)
    write_idx(tmp_path / FILES[i], a)
    assert expected in one_line(formats.read, "fashion_mnist", tmp_path)


def test_missing_files_and_roots_name_the_package(tmp_path):
    msg = one_line(formats.read, "fashion_mnist", tmp_path)
    assert "train-images-idx3-ubyte" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "no Debian package ships MNIST" in one_line(formats.read, "mnist", tmp_path)
    assert "dataset-fashion-mnist" in one_line(formats.read, "fashion_mnist", tmp_path / "absent")
    # mnist has no default root: loading it without one says so (and how to get the files)
    assert "no Debian package" in one_line(load_dataset, DataConfig(name="mnist"))


def test_fashion_mnist_defaults_to_the_debian_location(tmp_path, monkeypatch):
    assert data_root(DataConfig(name="fashion_mnist")) == REAL
    assert data_root(DataConfig(name="fashion_mnist", root=str(tmp_path))) == tmp_path
    absent = tmp_path / "not-installed"
    title, tv, package, _ = formats.IDX_SOURCES["fashion_mnist"]
    monkeypatch.setitem(formats.IDX_SOURCES, "fashion_mnist", (title, tv, package, str(absent)))
    cfg = DataConfig(name="fashion_mnist", seed=98765)  # a config no other test has loaded (lru cache)
    msg = one_line(load_dataset, cfg)
    assert str(absent) in msg and "apt-get install dataset-fashion-mnist" in msg
    # a spec is refused before anything runs, with the same advice
    from sweeps.spec import load_spec

    raw = {"name": "f", "base": {"data": {"name": "fashion_mnist"}}, "methods": {"ft": {}},
           "objectives": [{"metric": "test_acc", "direction": "maximize"}]}
    with pytest.raises(UserError, match=r"^base\.data\.root: .*dataset-fashion-mnist"):
        load_spec(raw)
    assert load_spec(raw, check_data=False).name == "f"


@pytest.fixture
def torchvision_import(monkeypatch):
    """Make `import torchvision` fail with the exception the test sets."""
    real, failure = builtins.__import__, {}

    def fake(name, *args, **kwargs):
        if name.split(".")[0] == "torchvision":
            raise failure["exc"]
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    return failure


def test_download_needs_the_vision_extra(tmp_path, torchvision_import):
    torchvision_import["exc"] = ImportError("No module named 'torchvision'")
    msg = one_line(load_dataset, DataConfig(name="fashion_mnist", root=str(tmp_path / "dl"), download=True))
    assert "torchvision is not installed" in msg and "vision" in msg
    torchvision_import["exc"] = RuntimeError("operator torchvision::nms does not exist")
    assert "torchvision does not import" in one_line(formats.download, "mnist", tmp_path)


# ---------------------------------------------------------------- DeepUnlearn's split rule and input
@pytest.fixture(scope="module")
def fake_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fmnist")
    make_fake(root, 200, 40, gz=True)
    return root


def test_deepunlearn_split_rule_is_scikit_learns_train_test_split(fake_root):
    ds = load_dataset(DataConfig(name="fashion_mnist", root=str(fake_root), **DU_DATA))
    x, y, *_ = fake_arrays(200, 40)
    kept, val = train_test_split(np.arange(200), test_size=0.15, random_state=123)  # their hold-out
    assert len(ds.y_val) == 30 and len(ds.y_train) == 170
    assert np.array_equal(ds.x_train[:, 0].numpy(), x[kept])  # the train set in their order
    assert np.array_equal(ds.x_val[:, 0].numpy(), x[val])
    split = make_split(ds, SplitConfig(**DU_SPLIT), split_seed=7)
    _, forget = train_test_split(kept, test_size=0.1, random_state=123)  # their forget draw
    assert len(split.forget) == 17 == math.ceil(0.1 * 170)  # a fraction rounds up, as sklearn's
    assert sorted(kept[split.forget.numpy()].tolist()) == sorted(forget.tolist())
    assert torch.equal(make_split(ds, SplitConfig(**DU_SPLIT), split_seed=0).forget, split.forget)


def test_split_defaults_are_unchanged_and_the_rule_is_random_only(fake_root):
    ds = load_dataset(DataConfig(name="fashion_mnist", root=str(fake_root)))
    assert len(ds.y_val) == 20 and sorted(ds.y_val.tolist()) == sorted(list(range(10)) * 2)  # stratified
    a = make_split(ds, SplitConfig(), 3)
    g = torch.Generator().manual_seed(3)
    assert torch.equal(a.forget, torch.randperm(180, generator=g)[:18].sort().values)
    assert torch.equal(make_split(ds, SplitConfig(seed=3), 0).forget, a.forget)  # a fixed split seed
    with pytest.raises(ValueError, match="rule is for scenario 'random'"):
        SplitConfig(scenario="class", forget_class=0, rule="train_test_split")


def test_three_channels_resized_to_32_with_their_normalisation(tmp_path):
    x = np.full((20, 28, 28), 77, np.uint8)
    x[:, :, 14:] = 200  # a vertical edge
    for name, a in zip(FILES, (x, np.arange(20) % 10, x[:10], np.arange(10))):
        write_idx(tmp_path / name, np.asarray(a, np.uint8))
    ds = load_dataset(DataConfig(name="fashion_mnist", root=str(tmp_path), channels=3, resize=32,
                                 val_fraction=0.0))
    assert ds.in_shape == (3, 32, 32) and ds.x_train.dtype == torch.uint8
    assert torch.equal(ds.x_train[:, 0], ds.x_train[:, 1]) and torch.equal(ds.x_train[:, 0], ds.x_train[:, 2])
    row = ds.x_train[0, 0, 5]
    assert row[:15].eq(77).all() and row[-15:].eq(200).all()  # flat parts stay exact, the edge is blended
    assert ds.mean == (0.2860,) * 3 and ds.std == (0.3530,) * 3
    assert ds.flip and ds.crop_pad == 0  # their augmentation: a horizontal flip in training only
    off = load_dataset(DataConfig(name="fashion_mnist", root=str(tmp_path), augment=False, val_fraction=0.0))
    assert not off.flip and off.in_shape == (1, 28, 28) and off.mean == (0.2860,)
    with pytest.raises(DataError, match="only grey images"):
        load_dataset(DataConfig(name="synthetic", n_train=40, n_test=10, channels=1))


# ---------------------------------------------------------------- models
def test_resnet18_imagenet_has_torchvisions_layout_and_size():
    m = build_model("resnet18_imagenet", (3, 32, 32), 10)
    assert count_params(m) == 11_181_642  # torchvision.models.resnet18(num_classes=10)
    conv, pool = m.stem[0], m.stem[3]
    assert (conv.kernel_size, conv.stride, conv.padding) == ((7, 7), (2, 2), (3, 3))
    assert (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 1)
    x = torch.randn(2, 3, 32, 32)
    assert m.stem(x).shape == (2, 64, 8, 8) and m(x).shape == (2, 10)
    # torchvision's initialisation: Kaiming normal over fan-out (7 * 7 * 64), not PyTorch's default
    assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2 / (7 * 7 * 64)), rel=0.05)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_lenet_takes_every_size_the_presets_use(shape):
    m = build_model("lenet", shape, 10)
    assert m(torch.randn(3, *shape)).shape == (3, 10)
    if shape == (1, 28, 28):
        assert count_params(m) == 538_412


# ---------------------------------------------------------------- the attack and the objective
def test_loss_mia_known_answers():
    rng = np.random.default_rng(0)
    assert M.loss_mia(rng.uniform(0, 0.1, 1000), rng.uniform(2, 3, 1000)) > 99  # separable
    same = M.loss_mia(rng.exponential(0.5, 3000), rng.exponential(0.5, 3000))
    assert abs(same - 50) < 4  # one distribution: chance
    a, b = rng.exponential(0.3, 5000), rng.exponential(0.6, 600)  # the larger is subsampled to 600
    assert M.loss_mia(a, b) == M.loss_mia(a, b) and 50 < M.loss_mia(a, b) < 80
    assert math.isnan(M.loss_mia(np.ones(9), np.ones(100)))


def test_indiscernibility_and_rte_known_values():
    assert [M.indiscernibility(v) for v in (50, 100, 0, 75, 25)] == [100, 0, 0, 50, 50]
    assert M.run_time_efficiency(60.0, 12.0) == 5.0 and M.run_time_efficiency(30.0, 30.0) == 1.0
    assert math.isnan(M.run_time_efficiency(30.0, 0.0))


def test_deepunlearn_attack_on_probabilities():
    p = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    assert np.allclose(M.per_example_loss(p, torch.tensor([0, 0, 1])), -np.log([0.9, 0.2, 0.5]))
    sure, unsure = torch.tensor([[0.999, 0.001]]).repeat(500, 1), torch.tensor([[0.4, 0.6]]).repeat(500, 1)
    y = torch.zeros(500, dtype=torch.long)
    out = M.deepunlearn_mia(sure, y, unsure, y)
    assert out["du_mia"] == 100 and out["indiscernibility"] == 0 and out["du_indisc"] == 100


def test_deepunlearn_terms_are_their_score_on_the_percent_scale():
    u = {"retain_acc": 97.0, "forget_acc": 95.0, "val_acc": 90.0, "du_indisc": 8.0}
    r = {"retain_acc": 94.0, "forget_acc": 89.0, "val_acc": 91.5}
    t = M.deepunlearn_terms(u, r)
    assert t["du_retain"] == pytest.approx(1.0) and t["du_forget"] == pytest.approx(2.0)
    assert t["du_val"] == pytest.approx(0.5)
    # their code: fractions, |d|/3 for the accuracies, 1 - indiscernibility, Euclidean norm
    theirs = math.sqrt((0.03 / 3) ** 2 + (0.06 / 3) ** 2 + (0.015 / 3) ** 2 + 0.08 ** 2)
    assert t["du_norm"] == pytest.approx(100 * theirs)


def test_new_metrics_are_known_to_specs_and_the_record():
    from sweeps.results import METRIC_COLUMNS
    from sweeps.spec import METRICS, load_spec, read_spec_source

    new = {"du_mia": False, "indiscernibility": False, "du_indisc": False, "du_retain": True,
           "du_forget": True, "du_val": True, "du_norm": True, "rte": True}
    assert {k: METRICS[k] for k in new} == new and set(new) <= set(METRIC_COLUMNS)
    for name in ("fmnist_cpu", "fmnist_deepunlearn"):
        spec = load_spec(read_spec_source(name), check_data=False)
        assert spec.select.metric == "du_norm" and spec.seed_axes == ["train", "unlearn"]
        assert spec.selection_rule == "oracle" and spec.base["split"]["rule"] == "train_test_split"
        assert all(m.space["augment"].value is False for k, m in spec.methods.items() if k != "retrain")


def test_a_trial_reports_deepunlearn_metrics(fake_root, oracle_cache):
    from unlearning.trial import load_trial_config, run_trial

    def run(method, **params):
        r = run_trial(load_trial_config({
            "method": method, "params": params, "model": "lenet", "cache_dir": str(oracle_cache),
            "data": {"name": "fashion_mnist", "root": str(fake_root), **DU_DATA},
            "split": DU_SPLIT, "train": {"epochs": 2}, "eval": {"du_mia": True, "mia": False}}))
        assert r.state == "COMPLETE", r.error
        return r.metrics

    retrain = run("retrain")
    assert retrain["du_retain"] == retrain["du_forget"] == retrain["du_val"] == 0 and retrain["rte"] == 1
    assert retrain["du_norm"] == pytest.approx(retrain["du_indisc"])
    assert retrain["indiscernibility"] == pytest.approx(100 - 2 * abs(retrain["du_mia"] - 50))
    ft = run("ft", epochs=1, lr=0.05, augment=False)
    terms = [ft[k] for k in ("du_retain", "du_forget", "du_val", "du_indisc")]
    assert ft["du_norm"] == pytest.approx(math.sqrt(sum(v * v for v in terms)))
    assert ft["rte"] == pytest.approx(retrain["runtime_s"] / ft["runtime_s"])
    assert ft["du_forget"] == pytest.approx(abs(ft["forget_acc"] - retrain["forget_acc"]) / 3)


# ---------------------------------------------------------------- the real files
@pytest.mark.skipif(not all((REAL / f"{f}.gz").is_file() for f in FILES),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_and_deepunlearns_split_sizes():
    raw = formats.read("fashion_mnist", REAL)
    with gzip.open(REAL / "train-labels-idx1-ubyte.gz") as f:  # parsed independently: 8-byte header
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    with gzip.open(REAL / "t10k-images-idx3-ubyte.gz") as f:  # 16-byte header
        test_images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    assert raw.x_train.shape == (60000, 1, 28, 28) and raw.x_test.shape == (10000, 1, 28, 28)
    assert np.array_equal(raw.y_train, labels) and np.array_equal(raw.x_test[:, 0], test_images)
    assert np.bincount(raw.y_train).tolist() == [6000] * 10 and np.bincount(raw.y_test).tolist() == [1000] * 10
    ds = load_dataset(DataConfig(name="fashion_mnist", **DU_DATA))  # found without a root
    split = make_split(ds, SplitConfig(**DU_SPLIT), 0)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (51000, 9000, 10000)
    assert (len(split.forget), len(split.retain)) == (5100, 45900)
