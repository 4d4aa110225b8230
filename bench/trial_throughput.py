"""Trial throughput: the reference codebases' way vs unlearn-sweep's, same method, same loop.

    .venv/bin/python bench/trial_throughput.py --tiny                 # CPU smoke run (make bench)
    python bench/trial_throughput.py --pack 1,2,4,8 --out X.json       # on a GPU machine

A sweep of N trials of one method (EUPMU by default: ResNet-18, synthetic CIFAR-shaped data of
CIFAR-10's size: 50,000 training images of which 10% are held out for validation, 10,000 test;
random 10% forgotten; 5 epochs; batch 256) is run two ways:

(a) reference: as the reference codebases run it: one trial at a time, fp32, a CPU DataLoader with
    per-sample crop+flip in `--workers` worker processes and pinned memory. Implemented as a data
    door (`LoaderData`, a MethodData whose `batches()` reads from the DataLoader) handed to the SAME
    `run_trial` / `run_loop` / method: no copied training loop.
(b) unlearn-sweep: `run_trial` with bf16 on the device-resident path (batches gathered on the GPU,
    on-device augmentation, static shapes, channels-last), K trials packed per GPU through the Ray
    backend with gpus_per_trial = 1/K for each K of `--pack`. Without Ray or a GPU (e.g. `--tiny`
    on a CPU) it falls back, with a printed note, to the inline backend (K = 1).

Neither includes oracle training: the original and Retrain models are trained once (a short recipe,
`--oracle-epochs`: they are not what is measured) into the oracle cache before any timing. On CUDA
each way also runs an untimed warm-up (cuDNN autotuning, CUDA context, data upload per process).

Writes one JSON (default bench/results/trial_throughput_<device>[_tiny].json): trials/hour of both
and their ratio, GPU utilisation, aggregate training images/s against the H100 figures of issue 6,
peak GPU memory per trial, MIA (SVC) seconds, and (a) vs (b) metrics for the same seeds.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unlearning.data import Dataset, load_dataset  # noqa: E402
from unlearning.loop import autocast_factory  # noqa: E402
from unlearning.methods import all_methods  # noqa: E402
from unlearning.oracle import get_oracles  # noqa: E402
from unlearning.splits import Batch, MethodData, make_split  # noqa: E402
from unlearning.tasks import run_trial_payload  # noqa: E402
from unlearning.trial import TrialConfig, load_trial_config, resolve_device, run_trial  # noqa: E402

# Figures quoted in issue 6 ("Fast on a GPU"), measured on one H100 (ResNet-18 CIFAR stem, 32x32,
# synthetic data): images/s by /work/shared/device/gpu_limits.py, trials/h by the issue's
# whole-trial probe (45,000 images, 10% forget, 5 epochs, batch 256, one extra no-grad forward per
# step). NOT measured by this bench: quoted for comparison.
ISSUE6_H100 = {
    "source": "issue 6, H100; img/s from /work/shared/device/gpu_limits.py, trials/h from the "
              "issue's whole-trial probe",
    "train_img_per_s_1proc_bs128": [11600, 16400],
    "train_img_per_s_bs256_bf16_channels_last": 29000,
    "train_img_per_s_4proc_packed_bs128_total": 33700,
    "cpu_dataloader_crop_flip_img_per_s_4workers": 17000,
    "probe_trial_s_reference": 22.1,
    "probe_trials_per_h": {"reference": 163, "resident_bf16_cl_1": 220, "packed_4": 407,
                           "packed_8": 429},
    "probe_gib_per_trial": 1.1,
}
COMPARED = ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy", "avg_gap")
GIB = 2 ** 30


# -- (a)'s data door: a CPU DataLoader, as the reference codebases feed their loop ----------------

class _Samples(torch.utils.data.Dataset):
    """Per-sample CPU work as torchvision's RandomCrop(pad)+RandomHorizontalFlip+Normalize do it."""

    def __init__(self, ds: Dataset, pool: torch.Tensor, flags: torch.Tensor, augment: bool):
        self.x, self.y, self.pool, self.flags = ds.x_train, ds.y_train, pool, flags
        self.pad, self.flip = (ds.crop_pad, ds.flip) if augment else (0, False)
        self.mean = torch.tensor(ds.mean).view(-1, 1, 1)
        self.std = torch.tensor(ds.std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.pool)

    def __getitem__(self, i: int):
        j = int(self.pool[i])
        img = self.x[j]
        if self.pad:
            h, w = img.shape[-2:]
            padded = torch.nn.functional.pad(img, (self.pad,) * 4)
            dy, dx = (int(v) for v in torch.randint(0, 2 * self.pad + 1, (2,)))
            img = padded[:, dy:dy + h, dx:dx + w]
        if self.flip and bool(torch.rand(()) < 0.5):
            img = img.flip(-1)
        img = img.float() / 255.0 if img.dtype == torch.uint8 else img.float()
        return (img - self.mean) / self.std, self.y[j], j, self.flags[i]


class LoaderData(MethodData):
    """MethodData whose epochs come from a torch DataLoader over CPU tensors (shuffle, `workers`
    processes, pin_memory on CUDA), copied to the device per batch. `gather` and the rest are
    MethodData's own; `seen` is recorded the same way."""

    def __init__(self, ds, forget, retain, *, val, gen, augment=True, cpu_ds: Dataset, workers: int):
        super().__init__(ds, forget, retain, val=val, gen=gen, augment=augment)
        self.cpu_ds, self.workers = cpu_ds, workers

    def batches(self, mode: str, batch_size: int, augment: bool = True) -> Iterator[Batch]:
        forget, retain = self.forget.cpu(), self.retain.cpu()
        if mode == "forget":
            pool, flags = forget, torch.ones(len(forget), dtype=torch.bool)
        elif mode == "retain":
            pool, flags = retain, torch.zeros(len(retain), dtype=torch.bool)
        elif mode == "mixed":
            pool = torch.cat([forget, retain])
            flags = torch.arange(len(pool)) < len(forget)
        else:
            raise ValueError(f"the reference data door does not model batch mode {mode!r}")
        dev = self.ds.device
        seed = int(torch.randint(0, 2 ** 62, (1,), device=self.gen.device, generator=self.gen))
        loader = torch.utils.data.DataLoader(
            _Samples(self.cpu_ds, pool, flags, augment and self.augment), batch_size=batch_size,
            shuffle=True, num_workers=self.workers, pin_memory=dev.type == "cuda",
            generator=torch.Generator().manual_seed(seed))
        for x, y, idx, f in loader:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            idx, f = idx.to(dev, non_blocking=True), f.to(dev, non_blocking=True)
            self.seen[idx] = True
            yield Batch(x, y, idx, f, mode)


# -- measuring -------------------------------------------------------------------------------------

class GpuSampler:
    """GPU utilisation (%) and memory used (MiB) sampled every `every` s in a thread (nvidia-smi,
    else torch.cuda.utilization). Nothing on a CPU run."""

    def __init__(self, device: torch.device, every: float = 0.5):
        self.device, self.every = device, every
        self.util: list[float] = []
        self.mem_mib: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.index = device.index or 0
        self.smi = shutil.which("nvidia-smi")

    def _read(self) -> tuple[float, float] | None:
        if self.smi:
            try:
                out = subprocess.run(
                    [self.smi, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                     "-i", str(self.index)], capture_output=True, text=True, timeout=5).stdout
                u, m = (float(v) for v in out.strip().split(","))
                return u, m
            except Exception:
                pass
        try:
            return float(torch.cuda.utilization(self.index)), float("nan")
        except Exception:
            return None

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            got = self._read()
            if got is not None:
                self.util.append(got[0])
                self.mem_mib.append(got[1])

    def __enter__(self) -> "GpuSampler":
        if self.device.type == "cuda":
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self) -> dict[str, Any] | None:
        if not self.util:
            return None
        mem = [m for m in self.mem_mib if not math.isnan(m)]
        return {"mean_pct": round(statistics.fmean(self.util), 1),
                "median_pct": round(statistics.median(self.util), 1), "samples": len(self.util),
                "max_mem_used_mib": max(mem) if mem else None}


def trial_payload(args, *, precision: str, seed: int, epochs: int | None = None) -> dict[str, Any]:
    """One trial's TrialConfig as a plain dict; `seed` is the unlearn seed (split/train fixed)."""
    data = {"name": "synthetic", "n_train": args.n_train, "n_test": args.n_test,
            "image_size": args.image_size}
    return {"method": args.method, "params": {"epochs": epochs or args.epochs,
                                              "batch_size": args.batch_size},
            "data": data, "split": {"scenario": "random", "forget_fraction": args.forget_fraction},
            "model": args.model, "train": {"epochs": args.oracle_epochs, "batch_size": args.batch_size,
                                           "lr": 0.05, "schedule": "cosine"},
            "seeds": {"split_seed": 0, "train_seed": 0, "unlearn_seed": seed},
            "device": args.device, "precision": precision, "cache_dir": args.cache_dir}


def warm_oracles(cfg: TrialConfig) -> tuple[float, int, int]:
    """Train (or load) the original and Retrain models into the cache: nothing timed trains them.
    Returns (seconds, training-set size, forget-set size)."""
    device = resolve_device(cfg.device)
    ds = load_dataset(cfg.data, device)
    split = make_split(ds, cfg.split, cfg.seeds.split_seed)
    t0 = time.perf_counter()
    get_oracles(ds, split, model_name=cfg.model, recipe=cfg.train, train_seed=cfg.seeds.train_seed,
                device=device, autocast=autocast_factory(device, cfg.precision),
                cache_dir=Path(cfg.cache_dir), retrain=True)
    return time.perf_counter() - t0, len(ds.y_train), len(split.forget)


def summarise(results: list[dict], wall_s: float, images_per_trial: int, sampler: GpuSampler,
              **extra) -> dict[str, Any]:
    ok = [r for r in results if r["state"] == "COMPLETE"]
    runtimes = [r["runtime_s"] for r in ok]
    mia = [r["metrics"].get("mia_seconds", float("nan")) for r in ok]
    peaks = [r.get("peak_mem_bytes", 0) for r in ok]
    n = len(results)
    return {
        **extra,
        "trials": n, "completed": len(ok), "errors": sorted({r["error"] for r in results if r["error"]}),
        "wall_s": round(wall_s, 3),
        "trials_per_hour": round(len(ok) * 3600.0 / wall_s, 1) if wall_s > 0 else None,
        "s_per_trial": round(wall_s / max(len(ok), 1), 3),
        "unlearning_runtime_s_mean": round(statistics.fmean(runtimes), 3) if runtimes else None,
        "total_s_mean": round(statistics.fmean(r["total_s"] for r in ok), 3) if ok else None,
        "train_images_per_trial": images_per_trial,
        # everything counted: the wall clock includes evaluation, MIA and start-up between trials
        "aggregate_train_img_per_s": round(len(ok) * images_per_trial / wall_s) if wall_s > 0 else None,
        # the unlearning loop alone, per trial (a packed trial shares the GPU with K-1 others)
        "per_trial_loop_img_per_s": round(images_per_trial / statistics.fmean(runtimes))
        if runtimes else None,
        "mia_seconds_mean": round(statistics.fmean(mia), 3) if mia else None,
        "peak_gpu_mem_gib_per_trial": round(max(peaks) / GIB, 3) if any(peaks) else None,
        "gpu_util": sampler.summary(),
        "device_name": ok[0]["device_name"] if ok else None,
    }


def run_reference(args, images: int) -> tuple[dict, list[dict]]:
    """(a): inline, one at a time, fp32, the CPU DataLoader door."""
    cfg0 = load_trial_config(trial_payload(args, precision="fp32", seed=0))
    device = resolve_device(cfg0.device)
    door = functools.partial(LoaderData, cpu_ds=load_dataset(cfg0.data, "cpu"), workers=args.workers)
    if device.type == "cuda":  # untimed: CUDA context, cuDNN autotuning, loader start-up paths
        run_trial(load_trial_config(trial_payload(args, precision="fp32", seed=10_000, epochs=1)),
                  method_data=door)
    results = []
    with GpuSampler(device) as sampler:
        t0 = time.perf_counter()
        for i in range(args.trials):
            cfg = load_trial_config(trial_payload(args, precision="fp32", seed=i))
            results.append(run_trial(cfg, method_data=door).model_dump(mode="json"))
            print(f"  (a) trial {i}: {results[-1]['state']} runtime {results[-1]['runtime_s']:.2f}s",
                  flush=True)
        wall = time.perf_counter() - t0
    summary = summarise(results, wall, images, sampler, precision="fp32", data_path="cpu_dataloader",
                        workers=args.workers, concurrency=1)
    return summary, results


def make_backend(args, k: int, device: torch.device):
    """The Ray backend with gpus_per_trial = 1/k, or (no Ray / no GPU / --backend inline) the
    inline backend, with the reason."""
    if args.backend == "inline":
        return _inline(), "inline backend: asked for (--backend inline)"
    if args.backend == "auto" and device.type != "cuda":
        return _inline(), "inline backend (K=1): no GPU here, packing trials needs one"
    try:
        from cluster.ray_backend import RayBackend
    except Exception as e:  # noqa: BLE001 - any import problem means: no Ray here
        if args.backend == "ray":
            raise
        return _inline(), f"inline backend (K=1): Ray unavailable ({type(e).__name__}: {e})"
    gpus = (1.0 / k) if device.type == "cuda" else 0.0
    try:
        backend = RayBackend(run_trial_payload, None, cpus_per_trial=args.cpus_per_trial,
                             gpus_per_trial=gpus, max_concurrent=k)
    except Exception as e:  # noqa: BLE001 - e.g. ClusterConfigError: too few CPUs for K actors
        if args.backend == "ray":
            raise
        return _inline(), f"inline backend (K=1): the Ray backend could not start ({type(e).__name__}: {e})"
    return backend, f"ray backend: {k} trial actor(s), gpus_per_trial={gpus:g}"


def _inline():
    from cluster.inline import InlineBackend
    return InlineBackend(run_trial_payload)


def drive(backend, payloads: list[dict]) -> list[dict]:
    """Keep every slot busy until all payloads are done (the orchestrator's pattern)."""
    todo, running, out = list(enumerate(payloads)), {}, {}
    while todo or running:
        while todo and len(running) < max(backend.capacity(), 1):
            i, p = todo.pop(0)
            running[backend.submit(f"t{i}", p)] = i
        for o in backend.wait(list(running), timeout=None):
            i = running.pop(o.handle)
            out[i] = o.result if o.result is not None else {
                "state": "FAIL", "error": f"lost: {o.lost}", "metrics": {}, "runtime_s": float("nan"),
                "total_s": float("nan"), "peak_mem_bytes": 0, "device_name": ""}
    return [out[i] for i in range(len(payloads))]


def run_sweep(args, images: int, device: torch.device, ks: list[int], deadline: float, on_k
              ) -> list[str]:
    """(b) for each packing degree K: bf16, device-resident, K trials at once. Calls
    on_k(K, summary row, results) after each K; returns notes (fallbacks, skips)."""
    notes: list[str] = []
    measured_any = False
    ray_started = False
    if device.type == "cuda" and args.backend != "inline":
        try:
            import ray
            if not ray.is_initialized():
                os.environ["PYTHONPATH"] = os.pathsep.join(
                    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
                ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
                ray_started = True
        except Exception as e:  # noqa: BLE001
            notes.append(f"Ray could not start ({type(e).__name__}: {e})")
    try:
        for k in ks:
            if time.perf_counter() > deadline and measured_any:
                notes.append(f"K={k} skipped: --time-limit-s reached")
                continue
            backend, how = make_backend(args, k, device)
            if "inline" in how and k != 1:
                notes.append(f"K={k} not measured: {how}")
                continue
            print(f"(b) K={k}: {how}", flush=True)
            notes.append(f"K={k}: {how}")
            try:
                if device.type == "cuda":  # untimed: one start-up trial per actor (data, cuDNN)
                    drive(backend, [trial_payload(args, precision="bf16", seed=20_000 + j, epochs=1)
                                    for j in range(k)])
                n = max(args.trials, 2 * k) if device.type == "cuda" else args.trials
                payloads = [trial_payload(args, precision="bf16", seed=i) for i in range(n)]
                with GpuSampler(device) as sampler:
                    t0 = time.perf_counter()
                    results = drive(backend, payloads)
                    wall = time.perf_counter() - t0
            finally:
                backend.shutdown()
            backend_name = "inline" if "inline" in how else "ray"
            row = summarise(results, wall, images, sampler, pack=k, backend=backend_name,
                            gpus_per_trial=(round(1.0 / k, 4) if backend_name == "ray" and
                                            device.type == "cuda" else None),
                            precision="bf16", data_path="device_resident", concurrency=k)
            measured_any = True
            on_k(k, row, results)
            print(f"  (b) K={k}: {row['trials_per_hour']} trials/h", flush=True)
    finally:
        if ray_started:
            import ray
            ray.shutdown()
    return notes


def recommend(trials_per_hour: dict[int, float]) -> int:
    """The smallest K whose trials/h is within 5% of the best."""
    best = max(trials_per_hour.values())
    return min(k for k, v in trials_per_hour.items() if v >= 0.95 * best)


def default_pack(measured_k: int | None) -> dict[str, Any]:
    """The gpus_per_trial this bench recommends for sweeps (resources.gpus_per_trial): measured on
    this GPU when there is one, else the same rule applied to issue 6's H100 probe (provisional)."""
    if measured_k is not None:
        return {"value": round(1.0 / measured_k, 4), "pack": measured_k, "basis": "measured in this run"}
    probe = ISSUE6_H100["probe_trials_per_h"]
    k = recommend({1: probe["resident_bf16_cl_1"], 4: probe["packed_4"], 8: probe["packed_8"]})
    return {"value": round(1.0 / k, 4), "pack": k,
            "basis": "PROVISIONAL, not measured here: the same rule on issue 6's H100 probe "
                     "(1: 220/h, 4: 407/h, 8: 429/h; 407 is 94.9% of 429); ResNet-18 at CIFAR size "
                     "on an 80 GB GPU. Replace with a GPU run's recommended_gpus_per_trial."}


def compare(ref: list[dict], sweep: list[dict], n_forget: int) -> dict[str, Any]:
    """(a) vs (b) metrics for the same seeds (unlearn_seed 0..N-1, same split and oracles)."""
    # The two ways share neither random stream (the DataLoader shuffles and augments with the CPU
    # generator, the device path with the device generator) nor precision, so this checks that they
    # agree in distribution, not bit for bit. Tolerance: 3 binomial standard errors at p = 0.5 on the
    # smallest evaluated set (the forget set), at least 2 points: with 4,500 forget images that is
    # 2.2 points, about the seed-to-seed spread the unlearning literature reports for UA/RA/TA/MIA;
    # bf16's own effect (rounding in forward/backward, fp32 weights and loss) is well below it.
    tol = max(2.0, 3 * 100 * math.sqrt(0.25 / max(n_forget, 1)))
    pairs = [(a, b) for a, b in zip(ref, sweep) if a["state"] == b["state"] == "COMPLETE"]
    per_metric = {}
    for m in COMPARED:
        d = [abs(a["metrics"][m] - b["metrics"][m]) for a, b in pairs
             if m in a["metrics"] and m in b["metrics"]]
        per_metric[m] = round(max(d), 3) if d else None
    worst = max((v for v in per_metric.values() if v is not None), default=None)
    return {
        "seeds": list(range(len(pairs))),
        "reference": [{m: round(a["metrics"].get(m, float("nan")), 3) for m in COMPARED} for a, _ in pairs],
        "sweep": [{m: round(b["metrics"].get(m, float("nan")), 3) for m in COMPARED} for _, b in pairs],
        "max_abs_diff": per_metric, "max_abs_diff_all": worst, "tolerance_pp": round(tol, 2),
        "tolerance_why": "the two ways share no random stream (data order, augmentation) and differ "
                         "in precision: agreement in distribution is what is checked. Tolerance = 3 "
                         "binomial standard errors at p=0.5 on the forget set, at least 2 points "
                         "(2.2 at CIFAR-10 size: the seed-to-seed spread papers report); bf16's own "
                         "effect is well below that. Tiny runs (tens of forget images) make it wide.",
        "within_tolerance": None if worst is None else worst <= tol,
    }


def mia_probe(n: int) -> dict[str, Any]:
    """One MIA-efficacy SVC at a given size on synthetic confidences (members near 1, non-members
    lower), as `metrics.mia_efficacy` runs it: n members + n non-members fitted, n/2 forget scored."""
    import numpy as np

    from unlearning import metrics as M

    rng = np.random.default_rng(0)

    def probs(m, conc):
        p = rng.dirichlet(np.full(10, 0.3), size=m)
        y = rng.integers(0, 10, m)
        conf = rng.beta(conc, 1.0, m)
        p *= ((1 - conf) / (p.sum(1) - p[np.arange(m), y]).clip(1e-9))[:, None]
        p[np.arange(m), y] = conf
        return torch.from_numpy(p).float(), torch.from_numpy(y)

    (pr, yr), (pt, yt), (pf, yf) = probs(n, 20.0), probs(n, 6.0), probs(n // 2, 12.0)
    t0 = time.perf_counter()
    M.mia_efficacy(pr, yr, pt, yt, pf, yf)
    return {"n_members": n, "n_non_members": n, "n_forget": n // 2,
            "seconds": round(time.perf_counter() - t0, 2)}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda or "none", "cudnn": str(torch.backends.cudnn.version() or "none")}
    for name in ("ray", "numpy", "pydantic", "sklearn"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001
            out[name] = "missing"
    try:
        out["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                    capture_output=True, text=True, timeout=5).stdout.strip() or "?"
    except Exception:  # noqa: BLE001
        out["git"] = "?"
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true",
                    help="CPU smoke sizes: 600 images at 16x16, small_cnn, 2 trials, 1 epoch")
    ap.add_argument("--trials", type=int, help="trials per way (per K: at least 2K on a GPU)")
    ap.add_argument("--pack", default=None, help="packing degrees K to measure, e.g. 1,2,4,8")
    ap.add_argument("--method", default=None, help="default: eupmu (rl until eupmu is registered)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--n-test", type=int, default=None)
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--forget-fraction", type=float, default=0.1)
    ap.add_argument("--oracle-epochs", type=int, default=None, help="short: not what is measured")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers for (a)")
    ap.add_argument("--cpus-per-trial", type=float, default=1.0)
    ap.add_argument("--backend", choices=["auto", "ray", "inline"], default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cache-dir", default=None, help="oracle cache (default: a fresh temp dir)")
    ap.add_argument("--time-limit-s", type=float, default=480.0,
                    help="soft limit: later K values are skipped once it is passed")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (tiny: 1)")
    ap.add_argument("--mia-probe", type=int, default=None,
                    help="also time one MIA SVC with N members + N non-members (CIFAR-10 size: 10000)")
    ap.add_argument("--merge", default=None,
                    help="an earlier JSON of the same setup (e.g. other K values, or (a) from a "
                         "first device call): its rows join this run's in the K comparison")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    tiny = dict(trials=2, pack="1", model="small_cnn", n_train=600, n_test=200, image_size=16,
                epochs=1, batch_size=64, oracle_epochs=1, workers=2, threads=1, mia_probe=2000)
    full = dict(trials=8, pack="1,2,4,8", model="resnet18", n_train=50_000, n_test=10_000,
                image_size=32, epochs=5, batch_size=256, oracle_epochs=3, workers=4, mia_probe=10_000)
    for k, v in (tiny if args.tiny else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.method is None:
        args.method = "eupmu" if "eupmu" in all_methods() else "rl"
    return args


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    deadline = started + args.time_limit_s
    tmp_cache = None
    if args.cache_dir is None:
        tmp_cache = tempfile.mkdtemp(prefix="bench-oracles-")
        args.cache_dir = tmp_cache
    os.environ["UNLEARN_SWEEP_CACHE"] = args.cache_dir  # Ray actors inherit or are handed it
    ks = [int(k) for k in dict.fromkeys(str(args.pack).split(",")) if k.strip()]  # in the order given
    device = resolve_device(args.device)
    prior = json.loads(Path(args.merge).read_text()) if args.merge else None
    path = Path(args.out) if args.out else ROOT / "bench" / "results" / (
        f"trial_throughput_{'cuda' if device.type == 'cuda' else 'cpu'}{'_tiny' if args.tiny else ''}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"trial throughput: {args.method}, {args.model}, synthetic {args.n_train}+{args.n_test} at "
          f"{args.image_size}px, {args.epochs} epoch(s), batch {args.batch_size}, {args.trials} trials, "
          f"device {device}", flush=True)

    cfg = load_trial_config(trial_payload(args, precision="bf16", seed=0))
    oracle_s, n_train, n_forget = warm_oracles(cfg)
    print(f"oracles warmed in {oracle_s:.1f}s ({args.oracle_epochs} epoch(s): a short recipe, not "
          "what is measured; no timed trial trains an oracle)", flush=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    images = args.epochs * n_train  # rl/eupmu ('mixed'): every training image once per epoch
    state: dict[str, Any] = {"ref": None, "ref_results": [], "rows": [], "per_k": {}, "notes": []}

    def report(final: bool = False) -> dict[str, Any]:
        """Build the JSON from what has been measured so far and write it (after every phase, so a
        run cut short by a time limit still leaves its numbers)."""
        ref, ref_results, per_k = state["ref"], state["ref_results"], state["per_k"]
        rows = list(state["rows"])
        if prior:
            have = {r["pack"] for r in rows}
            rows += [{**r, "from": args.merge} for r in prior.get("sweep", []) if r["pack"] not in have]
            ref = ref or prior.get("reference")
        measured = [r for r in rows if r.get("trials_per_hour")]
        best = max(measured, key=lambda r: r["trials_per_hour"], default=None)
        # recommend the smallest K within 5% of the best: less memory and contention, same throughput
        rec_k = recommend({r["pack"]: r["trials_per_hour"] for r in measured}) if measured else None
        rec = next((r for r in measured if r["pack"] == rec_k), None)
        same_k = per_k.get(1) or (per_k[min(per_k)] if per_k else [])
        ratio = (round(best["trials_per_hour"] / ref["trials_per_hour"], 2)
                 if best and ref and ref.get("trials_per_hour") else None)
        mia = [r["metrics"]["mia_seconds"] for r in ref_results + [x for v in per_k.values() for x in v]
               if r["state"] == "COMPLETE" and "mia_seconds" in r["metrics"]]
        cmp_ = compare(ref_results, same_k, n_forget) if ref_results and same_k else (
            prior.get("metrics_compare") if prior else None)
        out = {
            "bench": "trial_throughput",
            "mode": "tiny" if args.tiny else "full",
            "complete": final,
            "command": " ".join(["python", "bench/trial_throughput.py",
                                 *(argv if argv is not None else sys.argv[1:])]),
            "device": {"type": device.type,
                       "name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                       "cpu_count": os.cpu_count(), "node": platform.node(),
                       "platform": platform.platform()},
            "versions": versions(),
            "setup": {"method": args.method, "model": args.model, "data": "synthetic",
                      "n_train_incl_val": args.n_train, "n_train": n_train, "n_test": args.n_test,
                      "image_size": args.image_size, "forget": f"random {args.forget_fraction:g}",
                      "n_forget": n_forget, "epochs": args.epochs, "batch_size": args.batch_size,
                      "trials": args.trials, "workers": args.workers,
                      "oracle_recipe": {"epochs": args.oracle_epochs, "lr": 0.05, "schedule": "cosine"},
                      "oracle_warm_s": round(oracle_s, 2),
                      "oracle_note": "original and Retrain trained once before timing with a short "
                                     "recipe (not what is measured); timed trials only load them"},
            "caveat": None if device.type == "cuda" else (
                "CPU run: a smoke test of the bench, not a performance figure. On a CPU both ways "
                "compute on the same cores (the device-resident path has nothing to win, packing is "
                "off), and this shared 2-core machine makes the (a)/(b) ratio swing run to run."),
            "reference": ref,
            "sweep": rows,
            "notes": state["notes"],
            "best_pack": best["pack"] if best else None,
            "recommended_pack": rec["pack"] if rec else None,
            "recommended_gpus_per_trial": (round(1.0 / rec["pack"], 4)
                                           if rec and device.type == "cuda" else None),
            "recommendation_rule": "smallest K whose trials/h is within 5% of the best measured K",
            "default_gpus_per_trial": default_pack(rec["pack"] if rec and device.type == "cuda" else None),
            "speedup_trials_per_hour": ratio,
            "mia": {"seconds_mean": round(statistics.fmean(mia), 3) if mia else None,
                    "seconds_max": round(max(mia), 3) if mia else None,
                    "note": "sklearn SVC fit+predict on the CPU after the GPU work (metrics.mia_seconds: "
                            "the unlearned model's). The original's and Retrain's evaluations (two "
                            "more SVCs) are memoised per worker process (unlearning/trial.py "
                            "_reference_metrics), so a long-lived actor pays them once. Packed trials "
                            "keep the GPU busy meanwhile; one-at-a-time trials leave it idle."},
            "mia_svc_probe": state.get("probe"),
            "metrics_compare": cmp_,
            "published_h100": ISSUE6_H100,
            "wall_s": round(time.perf_counter() - started, 1),
        }
        path.write_text(json.dumps(out, indent=2) + "\n")
        return out

    if not args.skip_reference:
        print("(a) reference: one at a time, fp32, CPU DataLoader", flush=True)
        state["ref"], state["ref_results"] = run_reference(args, images)
        print(f"  (a) {state['ref']['trials_per_hour']} trials/h", flush=True)
        report()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    def on_k(k: int, row: dict, results: list[dict]) -> None:
        state["rows"].append(row)
        state["per_k"][k] = results
        report()

    state["notes"] = run_sweep(args, images, device, ks, deadline, on_k)
    for n in state["notes"]:
        print(f"note: {n}", flush=True)
    state["probe"] = mia_probe(args.mia_probe) if args.mia_probe else None
    out = report(final=True)
    if tmp_cache:
        shutil.rmtree(tmp_cache, ignore_errors=True)
    a = out["reference"]["trials_per_hour"] if out["reference"] else None
    best = max((r for r in out["sweep"] if r.get("trials_per_hour")), key=lambda r: r["trials_per_hour"],
               default=None)
    print(f"(a) reference {a} trials/h; (b) best K={out['best_pack']} "
          f"{best['trials_per_hour'] if best else None} trials/h; ratio {out['speedup_trials_per_hour']}; "
          f"recommended K={out['recommended_pack']}; MIA {out['mia']['seconds_mean']} s/trial; "
          f"wrote {path}", flush=True)
    return out


if __name__ == "__main__":
    main()
