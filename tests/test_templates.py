"""Cluster templates (ray up, KubeRay RayJob, SLURM): they parse, carry what their tool needs, run
`unlearn-sweep run ... --backend ray --address auto`, start head and workers consistently, and keep
token authentication on."""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import yaml

T = Path(__file__).resolve().parents[1] / "cluster" / "templates"
RUN = re.compile(r"unlearn-sweep run \S+ --backend ray --address auto")


def ray_start_args(cmd: str) -> dict[str, str]:
    """`ray start --a=1 --b 2 --flag` -> {"a": "1", "b": "2", "flag": ""} (env assignments skipped)."""
    words = shlex.split(cmd.replace("\\\n", " "))
    words = words[words.index("start") + 1:]
    out, i = {}, 0
    while i < len(words):
        w = words[i]
        if w.startswith("--"):
            name, eq, value = w[2:].partition("=")
            if not eq and i + 1 < len(words) and not words[i + 1].startswith("--"):
                value, i = words[i + 1], i + 1
            out[name] = value
        i += 1
    return out


def test_ray_up_config_is_valid_for_the_launcher():
    cfg = yaml.safe_load((T / "ray-cluster.yaml").read_text())
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)  # what `ray up` checks
    for key in ("cluster_name", "provider", "auth", "available_node_types", "head_node_type",
                "setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        assert cfg.get(key), key
    assert cfg["head_node_type"] in cfg["available_node_types"]
    assert any("unlearn-sweep" in c for c in cfg["setup_commands"])

    head = next(c for c in cfg["head_start_ray_commands"] if "ray start" in c)
    worker = next(c for c in cfg["worker_start_ray_commands"] if "ray start" in c)
    h, w = ray_start_args(head), ray_start_args(worker)
    assert "head" in h and w["address"] == f"$RAY_HEAD_IP:{h['port']}"
    assert h["dashboard-host"] == "127.0.0.1"
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in worker
    assert "~/.ray/auth_token" in cfg["file_mounts"]  # the same token on every node
    assert RUN.search((T / "ray-cluster.yaml").read_text())  # the documented entrypoint


def test_kuberay_rayjob_manifest():
    job = yaml.safe_load((T / "kuberay-rayjob.yaml").read_text())
    assert job["apiVersion"].startswith("ray.io/") and job["kind"] == "RayJob"
    spec = job["spec"]
    assert RUN.search(spec["entrypoint"])
    assert spec["shutdownAfterJobFinishes"] is True
    rc = spec["rayClusterSpec"]
    head = rc["headGroupSpec"]["template"]["spec"]["containers"][0]
    workers = rc["workerGroupSpecs"]
    assert workers and all(g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] for g in workers)
    pods = [head] + [c for g in workers for c in g["template"]["spec"]["containers"]]
    pods += spec["submitterPodTemplate"]["spec"]["containers"]
    images = {c["image"] for c in pods}
    assert len(images) == 1  # head, workers and submitter run the same code
    for c in pods:
        env = {e["name"]: e for e in c["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ray-auth-token"
    for c in pods[:-1]:  # every Ray node shares the oracle cache
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["UNLEARN_SWEEP_CACHE"].startswith("/shared/")
        assert any(m["mountPath"] == "/shared" for m in c["volumeMounts"])
    for g in workers:
        res = g["template"]["spec"]["containers"][0]["resources"]
        assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"]
    # no secret value in the manifest: the token comes from the Secret
    assert not re.search(r"RAY_AUTH_TOKEN\W+value:", (T / "kuberay-rayjob.yaml").read_text())


def test_slurm_script():
    """The static checks; tests/test_cluster_slurm.py runs it under a real SLURM."""
    path = T / "slurm-ray.sh"
    text = path.read_text()
    bash = shutil.which("bash")
    assert bash
    r = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert text.startswith("#!/bin/bash")
    sbatch = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", text, re.M))
    for key in ("job-name", "nodes", "ntasks-per-node", "cpus-per-task", "gpus-per-node", "time"):
        assert key in sbatch, key
    # preemption: requeued, warned before the time limit, one log across restarts
    assert "requeue" in sbatch and sbatch["open-mode"] == "append"
    assert re.fullmatch(r"B:USR1@\d+", sbatch["signal"]) and "trap 'stop yes' USR1" in text
    # run-or-resume in one command (`run` continues the record of its run directory)
    assert re.search(r'^\s*\$UNLEARN_SWEEP run "\$SPEC" "\$\{OUT\[@\]\}" --backend ray '
                     r'--address "\$RAY_ADDRESS" &$', text, re.M)
    starts = [ln for ln in re.sub(r"\\\n\s*", " ", text).splitlines() if "ray start" in ln]
    head = next(ray_start_args(s) for s in starts if "--head" in s)
    worker = next(ray_start_args(s) for s in starts if "--head" not in s)
    assert head["port"] == "$PORT" and re.search(r"^PORT=\d+$", text, re.M)
    assert worker["address"] == "$HEAD_IP:$PORT"  # workers join the head's port
    assert head["num-gpus"] == worker["num-gpus"] == "$GPUS"
    assert head["num-cpus"] == worker["num-cpus"] == "$CPUS"
    # counts from SLURM, never hard-coded
    assert re.search(r"^GPUS=\$\{SLURM_GPUS_ON_NODE:-0\}", text, re.M)
    assert re.search(r"^CPUS=\$\{SLURM_CPUS_PER_TASK:-", text, re.M)
    assert head["dashboard-host"] == "127.0.0.1" and "block" in head and "block" in worker
    # readiness from `ray status`, not sleeps; never `ray stop` (every Ray of the user on the node)
    assert "ray status" in text and not re.search(r"sleep\s+[1-9]\d", text)
    assert "ray stop" not in re.sub(r"#.*", "", text)
    assert "export RAY_AUTH_MODE=token" in text and "export RAY_AUTH_TOKEN" in text
    assert "export UNLEARN_SWEEP_CACHE" in text
    assert "trap cleanup EXIT" in text  # the Ray steps end with the job script


def test_templates_ship_with_the_package():
    pyproject = (T.parents[1] / "pyproject.toml").read_text()
    assert 'cluster = ["templates/*"]' in pyproject
    assert {p.name for p in T.iterdir()} >= {"ray-cluster.yaml", "kuberay-rayjob.yaml", "slurm-ray.sh"}
