"""`unlearn-sweep audit RUN`: per-example audits (U-LiRA, KLoM, relearning; unlearning/audit.py) of
the top K configurations of a finished sweep, run as parallel tasks on the sweep's backend.

Flow: pick the configurations (`sweeps.report.analysis.top_configs`, the sweep's own selection rule) plus the
`original` / `retrain` baselines; work out every model the kinds need (N shadows, N originals, N
Retrain models for the `retrain` baseline, N reference Retrain models); phase 1 trains them (one
`train` task per model, in parallel: the oracle cache's lock and atomic files make each one train
once, and they stay cached for every later audit); phase 2 scores them (one `score` task per
configuration x role x model: unlearn a copy, take margins, run the relearning attack). Each
finished task lands in runs/<name>/audit/tasks/<key>.parquet (atomic); the key is a hash of what
determines the task's output, so a killed audit (even SIGKILL) resumes with the tasks it lacks, and a
larger one (more shadows, more configurations) reuses every task and model an earlier one made.
At the end the per-example table and the summary are recomputed from the task files
(sweeps/report/audit_results.py). A worker imports only `unlearning` and `cluster`.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from cluster.backend import Backend
from orchestrator.pool import Task as PoolTask
from sweeps.report import audit_results as AR
from sweeps.spec import AuditSpec, SweepSpec
from unlearning.errors import Failure, FailureKind, UserError


@dataclass
class Task:
    key: str
    op: str  # train | score
    role: str  # shadow | audited | reference
    index: int
    config_id: str  # "" for train and reference tasks
    method: str
    payload: dict[str, Any]
    attempt: int = 0


def config_id(method: str, params: dict[str, Any]) -> str:
    if method in ("original", "retrain") and not params:
        return method
    blob = json.dumps({"method": method, "params": params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def pick_configs(spec: SweepSpec, run_dir: Path, audit: AuditSpec) -> list[dict[str, Any]]:
    """The top `audit.top` configurations by the sweep's selection rule, then the baselines."""
    from sweeps.report.analysis import analyze, top_configs

    top = top_configs(analyze(run_dir, spec), audit.top)
    if top.empty:
        raise UserError(f"{run_dir}: no feasible complete configuration to audit (run or resume the "
                        "sweep first)")
    out = []
    for _, r in top.iterrows():
        params = json.loads(r["params_json"])
        out.append({"config_id": config_id(r["method"], params), "rank": int(r["rank"]),
                    "layer": int(r["layer"]), "trial_number": int(r["trial_number"]),
                    "method": r["method"], "params": params})
    if audit.baselines:
        out += [{"config_id": b, "rank": None, "layer": None, "trial_number": None, "method": b,
                 "params": {}} for b in ("original", "retrain")]
    return out


def base_trial(spec: SweepSpec) -> dict[str, Any]:
    """The audit's TrialConfig (data, split, model, recipe, seeds: the spec's first seed entry)."""
    from unlearning.trial import load_trial_config

    raw = spec.trial_config("retrain", {}, spec.seed_list()[0])
    return load_trial_config(raw).model_dump(mode="json")


def _key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def plan(spec: SweepSpec, audit: AuditSpec, configs: list[dict[str, Any]]) -> list[Task]:
    """Every task the audit needs: train tasks first, then score tasks. Keys hash what determines
    the output (not the number of shadows, not settings that only the summary uses)."""
    from sweeps.fingerprint import method_code_version
    from unlearning.methods import get_method
    from unlearning.oracle import code_version

    trial = base_trial(spec)
    core = {k: v for k, v in trial.items() if k not in ("method", "params", "retrain", "device", "cache_dir")}
    a = audit.model_dump(mode="json")
    science = {k: a[k] for k in ("shadows", "kinds", "seed", "baselines", "variance", "klom_bins",
                                 "klom_examples", "relearn")}
    n = audit.shadows
    roles = (["shadow"] if "ulira" in audit.kinds else []) + \
        (["audited", "reference"] if {"klom", "relearn"} & set(audit.kinds) else [])
    # the Retrain models a `retrain` configuration turns shadow k / original k into: trained in
    # phase 1 too, so no score task waits on another's training
    needs_retrain = any(c["method"] != "original" and get_method(c["method"]).from_oracle
                        for c in configs)
    scored = {"seed": audit.seed, "klom": "klom" in audit.kinds, "relearn": "relearn" in audit.kinds,
              "klom_examples": audit.klom_examples if "klom" in audit.kinds else None,
              "relearn_cfg": a["relearn"] if "relearn" in audit.kinds else None}
    train, score = [], []
    for role in roles + (["retrain"] if needs_retrain else []):
        for k in range(n):
            payload = {"op": "train", "trial": trial, "audit": science, "role": role, "index": k}
            parts = {"op": "train", "role": role, "index": k, "trial": core, "code": code_version(),
                     **({"seed": audit.seed} if role == "shadow" else {})}
            train.append(Task(_key(parts), "train", role, k, "", "", payload))
            if role == "reference":  # scored once, shared by every configuration
                parts = {**parts, "op": "score", "scored": scored}
                score.append(Task(_key(parts), "score", role, k, "", "", {**payload, "op": "score"}))
    for c in configs:
        method, params = c["method"], c["params"]
        code = code_version() if method in ("original", "retrain") else method_code_version(method)
        for role in (r for r in roles if r != "reference"):
            for k in range(n):
                payload = {"op": "score", "trial": trial, "audit": science, "role": role, "index": k,
                           "config": {"method": method, "params": params}}
                parts = {"op": "score", "role": role, "index": k, "trial": core, "code": code,
                         "config": payload["config"],
                         "scored": scored if role != "shadow" else {"seed": audit.seed}}
                score.append(Task(_key(parts), "score", role, k, c["config_id"], method, payload))
    return train + score


class AuditDriver:
    def __init__(self, spec: SweepSpec, run_dir: Path, audit: AuditSpec, *, backend: Backend | None = None,
                 log: TextIO | None = sys.stderr):
        self.spec, self.run_dir, self.audit, self.log_to = spec, Path(run_dir), audit, log
        self._backend = backend
        self.counts: Counter = Counter()
        self.nodes: Counter = Counter()

    def say(self, msg: str) -> None:
        if self.log_to is not None:
            print(f"[audit {self.spec.name}] {msg}", file=self.log_to, flush=True)

    def run(self) -> dict[str, Any]:
        from sweeps.rundir import DriverLock, check_inputs

        check_inputs(self.run_dir, self.spec)  # the sweep's own plug-ins, or nothing is audited
        t0 = time.perf_counter()
        configs = pick_configs(self.spec, self.run_dir, self.audit)
        tasks = plan(self.spec, self.audit, configs)
        d = AR.audit_dir(self.run_dir)
        d.mkdir(parents=True, exist_ok=True)
        lock = DriverLock(d, role="audit")
        lock.acquire()
        try:
            done = AR.done_tasks(self.run_dir)
            todo = [t for t in tasks if t.key not in done]
            self.say(f"{len(configs)} configuration(s) x {self.audit.shadows} model(s), kinds "
                     f"{','.join(self.audit.kinds)}: {len(tasks)} task(s), {len(tasks) - len(todo)} "
                     f"already done")
            if todo:
                self._execute(todo)
            summary = self._collect(configs, tasks, wall=time.perf_counter() - t0)
        finally:
            lock.release()
        wall = time.perf_counter() - t0
        self.say(f"finished in {wall:.1f}s: {self.counts['train']} model(s) prepared, "
                 f"{self.counts['score']} scored, {self.counts['fail']} failed"
                 + (f"; tasks per node: {dict(self.nodes)}" if self.nodes else ""))
        return {"wall_s": wall, "configs": configs, "summary": summary, "tasks": len(tasks),
                "ran": sum(self.counts[k] for k in ("train", "score")), "nodes": dict(self.nodes)}

    # -- running the tasks ---------------------------------------------------------------------
    def _execute(self, todo: list[Task]) -> None:
        from orchestrator.pool import TaskPool
        from orchestrator.runner import make_backend
        from orchestrator.shipping import Shipment
        from orchestrator.signals import current
        from unlearning.audit import run_audit_task

        stop = current()
        # SIGINT / SIGTERM end the audit cleanly (deferred: acted on between steps); a later call resumes
        with stop.installed(), stop.deferred():
            resources = self.spec.resources.model_copy(update={"max_concurrent": self.audit.max_concurrent})
            backend = self._backend or make_backend(resources, run_audit_task)
            try:
                pool = TaskPool(backend, max_retries=self.spec.resources.max_retries,
                                max_concurrent=self.audit.max_concurrent, stop=stop, say=self.say,
                                decorate=Shipment(self.spec, backend))
                pool.run(_AuditSource(self, todo))
            finally:
                if self._backend is None:
                    backend.shutdown()

    def _land(self, t: Task, result: dict[str, Any] | None, failure: Failure | None, node: str) -> None:
        row = {**(result or {"state": "FAIL"}), "key": t.key, "op": t.op, "role": t.role, "index": t.index,
               "config_id": t.config_id, "method": t.method, "attempt": t.attempt,
               "node": node or (result or {}).get("node", ""), "ended_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if failure is None and row["state"] != "COMPLETE":
            failure = Failure.model_validate(row["failure"])
        row.pop("failure", None)
        row.pop("retire_worker", None)
        if failure is not None:
            row.update(state="FAIL", error=failure.message, failure_kind=failure.kind.value)
        if failure is None or not failure.kind.transient:  # lost or interrupted: a resume retries it
            AR.write_task(self.run_dir, row)
        self.counts["fail" if row["state"] != "COMPLETE" else t.op] += 1
        if failure is not None and failure.kind != FailureKind.INTERRUPTED:
            self.say(f"{t.op} {t.role} {t.index} {t.method}: FAIL {failure.message}")
        self.nodes[row["node"]] += 1

    # -- from task files to results ------------------------------------------------------------
    def _collect(self, configs, tasks: list[Task], wall: float) -> list[dict[str, Any]]:
        from unlearning.audit import AuditConfig, assess, klom_subset
        from unlearning.data import load_dataset
        from unlearning.splits import make_split
        from unlearning.trial import load_trial_config

        rows = AR.read_tasks(self.run_dir, {t.key for t in tasks if t.op == "score"})
        by: dict[tuple, dict[int, dict]] = {}
        for t in tasks:
            r = rows.get(t.key)
            if t.op == "score" and r is not None and r["state"] == "COMPLETE":
                by.setdefault((t.config_id, t.role), {})[t.index] = r
        cfg = load_trial_config(base_trial(self.spec))
        ds = load_dataset(cfg.data, "cpu")
        split = make_split(ds, cfg.split, cfg.seeds.split_seed)
        audit = AuditConfig(**{k: v for k, v in self.audit.model_dump().items()
                               if k in AuditConfig.model_fields})
        sets = {"forget": ("train", split.forget),
                "retain": ("train", klom_subset(split.retain, audit.klom_examples, audit.seed, 1)),
                "val": ("val", klom_subset(split.val, audit.klom_examples, audit.seed, 2))}
        reference = by.get(("", "reference"), {})
        summary, examples = [], []
        for c in configs:
            shadow = {k: r["forget"] for k, r in by.get((c["config_id"], "shadow"), {}).items()}
            s, per = assess(audit, len(split.forget), shadow, by.get((c["config_id"], "audited")), reference)
            failed = sum(1 for t in tasks if t.config_id == c["config_id"] and t.key in rows
                         and rows[t.key]["state"] != "COMPLETE")
            summary.append({"config_id": c["config_id"], "rank": c["rank"], "layer": c["layer"],
                            "trial_number": c["trial_number"], "method": c["method"],
                            "params_json": json.dumps(c["params"], sort_keys=True),
                            "params": _short_params(c), "n_failed": failed, **s})
            examples += _example_rows(c, per, sets, ds)
        meta = {"shadows": audit.shadows, "kinds": audit.kinds, "seed": audit.seed,
                "variance": audit.variance, "klom_bins": audit.klom_bins, "wall_s": wall,
                "relearn": audit.relearn.model_dump(), "sweep": self.spec.name}
        AR.write_results(self.run_dir, examples, summary, meta)
        return summary


class _AuditSource:
    """The audit's tasks for the pool (orchestrator/pool.Source): every train task first; a score task
    only once no model is being trained, so a score task never holds a slot waiting on a lock."""

    def __init__(self, driver: "AuditDriver", todo: list[Task]):
        self.driver, self.queue = driver, deque(todo)
        self.training = 0
        self.total = Counter(t.op for t in todo)

    def next_task(self, slots: int) -> PoolTask | None:
        if not self.queue or (self.queue[0].op == "score" and self.training):
            return None
        t = self.queue.popleft()
        self.training += t.op == "train"
        return PoolTask(t.key, t.payload, f"{t.op} {t.role} {t.index}", item=t)

    def landed(self, task: PoolTask, result, failure: Failure | None, node: str) -> None:
        t: Task = task.item
        t.attempt = task.attempt
        self.training -= t.op == "train"
        self.driver._land(t, result, failure, node)
        c = self.driver.counts
        self.driver.say(f"train {c['train']}/{self.total['train']}  score {c['score']}/{self.total['score']}"
                        f"  failed {c['fail']}")

    def finished(self) -> bool:
        return not self.queue


def _short_params(c: dict[str, Any]) -> str:
    from unlearning.methods import get_method

    if c["method"] in ("original", "retrain"):
        return ""
    defaults = get_method(c["method"]).Config().model_dump()
    return ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(c["params"].items()) if defaults.get(k) != v)


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _example_rows(c, per: dict[str, np.ndarray], sets, ds) -> list[dict[str, Any]]:
    out = []
    for name, (part, idx) in sets.items():
        if f"klom_{name}" not in per and not (name == "forget" and "score" in per):
            continue
        labels = (ds.y_train if part == "train" else ds.y_val)[idx].tolist()
        for i, (ex, y) in enumerate(zip(idx.tolist(), labels)):
            row = {"config_id": c["config_id"], "method": c["method"], "set": name, "example": ex,
                   "label": y}
            if name == "forget" and "score" in per:
                ks, m = per["shadows"], per["members"][:, i]
                row.update(shadows=ks.tolist(), held_by=ks[m].tolist(), score=per["score"][:, i].tolist(),
                           lr_online=per["lr_online"][:, i].tolist(),
                           lr_offline=per["lr_offline"][:, i].tolist())
            if f"klom_{name}" in per:
                row.update(klom=float(per[f"klom_{name}"][i]), margin=per[f"margin_{name}"][:, i].tolist(),
                           margin_ref=per[f"margin_ref_{name}"][:, i].tolist())
            out.append(row)
    return out


def run_audit(spec: SweepSpec, run_dir: str | Path, audit: AuditSpec | None = None, **kw) -> dict[str, Any]:
    """Audit a sweep's top configurations; `audit` defaults to the spec's `audit:` section (or the
    defaults). Returns wall_s, configs, summary rows, task counts and tasks per node."""
    return AuditDriver(spec, Path(run_dir), audit or spec.audit or AuditSpec(), **kw).run()
