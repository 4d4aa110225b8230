"""A researcher's own method, model and `.npz` data set, and an original model trained elsewhere,
swept on a two-node Ray cluster where only the driver's machine holds the plug-in files and the
checkpoint (tests/cluster_util.py: nodes as network namespaces, each with its own /tmp, working
directory and oracle cache). Both reach the worker node in the tasks' payloads; the record equals
the same sweep's run inline, metric for metric.

Marked `cluster` (run by `make test-cluster`, not `make test`) and slow: about two minutes. The fast
twin, a worker process given only a payload, is in tests/test_byo_sweep.py."""
from __future__ import annotations

import hashlib
import json

import pytest

from tests.cluster_util import BIN, LocalCluster, unavailable
from tests.plugin_util import METHOD_SRC, MODEL_SRC, digits_npz, write

WHY = unavailable()
pytestmark = [pytest.mark.cluster, pytest.mark.ray, pytest.mark.slow,
              pytest.mark.skipif(WHY is not None, reason=WHY or "")]

SPEC = """\
name: byo-cluster
plugins: [my_lab/unlearn_methods.py, my_lab/models.py]
base:
  data: {name: npz, root: /tmp/data/digits.npz}
  model: tiny_mlp
  checkpoints: {original: released.pt}
  train: {epochs: 5}
methods:
  wneg: {space: {beta: {type: float, low: 0.5, high: 1.0}, epochs: 1}}
objectives: [{metric: forget_gap}, {metric: test_acc, direction: maximize}]
sampler: {name: random, seed: 0}
n_trials: 4
seeds: [0, 1]
seed_axes: [train, unlearn]
resources: {backend: ray, max_concurrent: null}
tracking: {wandb: {mode: disabled}}
"""


def test_plugin_trials_on_a_node_without_the_files_equal_the_same_sweep_inline(tmp_path, registries):
    from sweeps.results import METRIC_COLUMNS, REFERENCE_METRICS, read_results
    from tests.test_byo_sweep import released_original
    from unlearning.plugins import load_plugins
    from unlearning.trial import TIMINGS

    with LocalCluster(workers=1, logs=tmp_path / "logs") as c:
        head, worker = c.nodes
        # the lab lives in the head's own /tmp: /tmp/lab there, nothing at that path on the worker
        lab = head.dir / "tmp" / "lab"
        write(lab / "my_lab", "unlearn_methods.py", METHOD_SRC.format(name="wneg"))
        write(lab / "my_lab", "models.py", MODEL_SRC.format(name="tiny_mlp"))
        write(lab, "spec.yaml", SPEC)
        for node in c.nodes:  # the data set is staged on each node, at the same path, as CIFAR would be
            digits_npz(node.dir / "tmp" / "data" / "digits.npz")
        load_plugins([str(lab / "my_lab" / "models.py")])
        released_original(lab / "released.pt")
        assert c.run(worker, ["ls", "/tmp/lab"]).returncode != 0
        assert c.run(head, ["ls", "/tmp/lab/my_lab/models.py", "/tmp/lab/released.pt"]).returncode == 0
        runs = {}
        for how, extra in (("ray", ["--address", c.address]), ("inline", ["--backend", "inline"])):
            out = head.dir / f"run-{how}"
            res = c.run(head, [str(BIN / "unlearn-sweep"), "run", "/tmp/lab/spec.yaml", "--out", str(out),
                               *extra], env=c.env(head, UNLEARN_SWEEP_CACHE=str(head.dir / f"cache-{how}")),
                        timeout=900)
            assert res.returncode == 0, res.stderr[-4000:]
            runs[how] = {r["fingerprint"]: r for r in read_results(out).to_pylist()}
        ray, inline = runs["ray"], runs["inline"]
        assert len(ray) == 8 and all(r["state"] == "COMPLETE" for r in ray.values())
        assert {r["node"].split("/")[0] for r in ray.values()} == {head.ip, worker.ip}  # both ran trials
        assert c.run(worker, ["ls", "/tmp/lab"]).returncode != 0  # ... and the worker never had the files
        # the released original reached the worker's cache by its hash; Retrain was trained there or sent
        sha = hashlib.sha256((lab / "released.pt").read_bytes()).hexdigest()
        keys = [json.loads(p.read_text())["key"] for p in worker.cache.glob("*.json")]
        assert [k["checkpoint"] for k in keys if "checkpoint" in k] == [sha]
        # each train seed the worker ran has its Retrain there (how many seeds that is, the scheduler
        # decides: a worker that starts after the others' grace period joins with fewer trials)
        ran = {r["train_seed"] for r in ray.values() if r["node"].split("/")[0] == worker.ip}
        assert ran and {k["seed"] for k in keys if k.get("kind") == "retrain"} >= ran
        assert set(ray) == set(inline)  # the same runs: the same fingerprints
        compared = [m for m in METRIC_COLUMNS if m not in TIMINGS] + \
            [f"{k}_{m}" for k in ("original", "retrain") for m in REFERENCE_METRICS if m not in TIMINGS]
        for fp, r in ray.items():
            differ = [m for m in compared if r[m] != inline[fp][m] and not (r[m] != r[m] and
                                                                             inline[fp][m] != inline[fp][m])]
            assert not differ, (fp, {m: (r[m], inline[fp][m]) for m in differ})  # NaN is NaN
        assert {r["params_json"] for r in ray.values()} == {r["params_json"] for r in inline.values()}
