"""Running an audit's tasks in this process, without a sweep record: the known-answer tests use it
to audit chosen configurations (the baselines, GA) with the same task function the backends run."""
from __future__ import annotations

from typing import Any

from unlearning.audit import AuditConfig, assess, run_audit_task
from unlearning.data import load_dataset
from unlearning.splits import make_split
from unlearning.trial import load_trial_config


def audit_in_process(trial: dict[str, Any], audit: AuditConfig, configs: dict[str, dict[str, Any]]
                     ) -> dict[str, tuple[dict[str, float], dict[str, Any]]]:
    """{name: (summary, per-example arrays)} for each {name: {method, params}}."""
    a = audit.model_dump()
    roles = (["shadow"] if "ulira" in audit.kinds else []) + \
        (["audited"] if {"klom", "relearn"} & set(audit.kinds) else [])

    def task(op, role, k, config=None):
        r = run_audit_task({"op": op, "trial": trial, "audit": a, "role": role, "index": k,
                            "config": config})
        assert r["state"] == "COMPLETE", r
        return r

    reference = {}
    if "audited" in roles:
        reference = {k: task("score", "reference", k) for k in range(audit.shadows)}
    cfg = load_trial_config(trial)
    split = make_split(load_dataset(cfg.data), cfg.split, cfg.seeds.split_seed)
    out = {}
    for name, c in configs.items():
        got = {role: {k: task("score", role, k, c) for k in range(audit.shadows)} for role in roles}
        shadow = {k: r["forget"] for k, r in got.get("shadow", {}).items()}
        out[name] = assess(audit, len(split.forget), shadow, got.get("audited"), reference)
    return out
