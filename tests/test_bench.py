"""bench/trial_throughput.py: the --tiny run on the CPU runs both ways and writes the JSON the docs
describe; the reference way's data door (a CPU DataLoader) hands out exactly what MethodData does."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _bench_module():
    spec = importlib.util.spec_from_file_location("trial_throughput", ROOT / "bench" / "trial_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_loader_door_covers_the_same_examples_as_the_device_door():
    tt = _bench_module()
    from unlearning.data import DataConfig, load_dataset
    from unlearning.splits import SplitConfig, make_split

    ds = load_dataset(DataConfig(name="synthetic", n_train=200, n_test=20, image_size=8))
    split = make_split(ds, SplitConfig(forget_fraction=0.1), 0)
    door = tt.LoaderData(ds, split.forget, split.retain, val=split.val, gen=torch.Generator().manual_seed(0),
                         cpu_ds=ds, workers=0)
    batches = list(door.batches("mixed", 32))
    idx = torch.cat([b.idx for b in batches])
    flags = torch.cat([b.forget for b in batches])
    assert sorted(idx.tolist()) == sorted(torch.cat([split.forget, split.retain]).tolist())
    assert torch.equal(flags, torch.isin(idx, split.forget))
    assert batches[0].x.dtype == torch.float32 and batches[0].x.shape[1:] == ds.in_shape
    assert torch.equal(batches[0].y, ds.y_train[batches[0].idx])
    assert door.retain_examples_seen(split.retain) == len(split.retain)


@pytest.mark.slow  # the whole bench end to end; `make bench` runs it too
def test_tiny_bench_runs_both_ways_and_writes_the_json(tmp_path):
    out = tmp_path / "tt.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "trial_throughput.py"), "--tiny",
                           "--out", str(out), "--cache-dir", str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "inline backend" in proc.stdout  # the printed fallback note: no GPU here
    d = json.loads(out.read_text())
    assert d["mode"] == "tiny" and "trial_throughput.py --tiny" in d["command"]
    assert d["device"]["type"] == "cpu" and d["versions"]["torch"] == torch.__version__
    ref, sweep = d["reference"], d["sweep"]
    assert ref["data_path"] == "cpu_dataloader" and ref["precision"] == "fp32"
    assert ref["completed"] == ref["trials"] == 2 and ref["trials_per_hour"] > 0
    assert [r["pack"] for r in sweep] == [1] and sweep[0]["backend"] == "inline"
    assert sweep[0]["data_path"] == "device_resident" and sweep[0]["precision"] == "bf16"
    assert sweep[0]["completed"] == 2 and sweep[0]["trials_per_hour"] > 0
    for row in (ref, *sweep):
        assert row["gpu_util"] is None and row["peak_gpu_mem_gib_per_trial"] is None  # CPU
        assert row["aggregate_train_img_per_s"] > 0 and row["mia_seconds_mean"] >= 0
    assert d["speedup_trials_per_hour"] > 0 and d["best_pack"] == d["recommended_pack"] == 1
    cmp_ = d["metrics_compare"]
    assert cmp_["seeds"] == [0, 1] and cmp_["tolerance_pp"] >= 2.0
    assert set(cmp_["max_abs_diff"]) == {"unlearn_acc", "retain_acc", "test_acc", "mia_efficacy", "avg_gap"}
    assert cmp_["max_abs_diff_all"] is not None and isinstance(cmp_["within_tolerance"], bool)
    assert d["mia"]["seconds_mean"] is not None and d["mia_svc_probe"]["seconds"] >= 0
    assert d["published_h100"]["probe_trials_per_h"]["packed_4"] == 407
    assert "not what is measured" in d["setup"]["oracle_note"]
    assert d["default_gpus_per_trial"]["value"] > 0 and "PROVISIONAL" in d["default_gpus_per_trial"]["basis"]
