"""Shared pieces of the sweep tests: a fast fake task function (same contract as
unlearning.tasks.run_trial_payload), a small spec, and scripted backends implementing the protocol."""
from __future__ import annotations

import platform
from typing import Any

from cluster.backend import Handle, Outcome


def fake_task(payload: dict[str, Any], on_epoch=None) -> dict[str, Any]:
    """Metrics are a smooth function of lr and the unlearn seed; no torch, milliseconds per call."""
    p = dict(payload.get("params", {}))
    lr, s = float(p.get("lr", 0.01)), payload.get("seeds", {}).get("unlearn_seed", 0)
    m = {"unlearn_acc": 2 + 100 * lr, "retain_acc": 99.0 - 10 * lr, "test_acc": 95.0 - 100 * lr + s,
         "mia_efficacy": 5.0 + s, "forget_acc": 98 - 100 * lr, "val_acc": 94.0, "runtime_s": 0.01,
         "retain_examples_seen": 10.0}
    m["utility_drop"] = 95.0 - m["test_acc"]
    m["forget_gap"] = abs(100 * lr - 3) + s
    m["avg_gap"] = m["forget_gap"] / 2
    row = {"epoch": 0, "loss": 1.0 - lr, "steps": 3, "lr": lr, "elapsed_s": 0.001}
    rows = [row]
    k = (payload.get("eval") or {}).get("eval_every", 0)
    if k:  # three epochs; UA, RA, TA every k-th and after the last, ending at the final metrics
        rows = [{**row, "epoch": e, **({x: m[x] - (2 - e) for x in ("unlearn_acc", "retain_acc", "test_acc")}
                                       if (e + 1) % k == 0 or e == 2 else {})} for e in range(3)]
    for r in rows:
        if on_epoch:
            on_epoch(r)
    return {"state": "COMPLETE", "error": None, "method": payload["method"], "params": p, "config": payload,
            "metrics": m, "reference": {"original": {"test_acc": 95.0, "unlearn_acc": 0.0},
                                        "retrain": {"test_acc": 94.5, "unlearn_acc": 3.0}},
            "history": rows, "step_history": [], "runtime_s": 0.01, "total_s": 0.02, "device": "cpu",
            "device_name": "cpu", "peak_mem_bytes": 0, "node": platform.node(), "code_version": "test",
            "started_at": "2025-01-01T00:00:00+00:00", "ended_at": "2025-01-01T00:00:01+00:00"}


def small_spec(**over) -> dict[str, Any]:
    raw = {
        "name": "t",
        "base": {"data": {"name": "digits"}, "model": "small_cnn"},
        "methods": {"ft": {"space": {"lr": {"type": "log-float", "low": 1e-3, "high": 1e-1},
                                     "epochs": {"type": "fixed", "value": 1}}},
                    "rl": {"space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1}}}},
        "objectives": [{"metric": "forget_gap", "direction": "minimize"},
                       {"metric": "test_acc", "direction": "maximize"}],
        "constraints": [{"metric": "utility_drop", "max": 5.0}],
        "sampler": {"name": "tpe", "seed": 0},
        "n_trials": 6,
        "seeds": [0],
        "resources": {"backend": "inline"},
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    raw.update(over)
    return raw


class ScriptedBackend:
    """Runs the task inline but loses the first `lose` attempts of every task (retryable or not);
    `hang=True` never finishes anything (for timeouts)."""

    def __init__(self, fn, lose: int = 0, retryable: bool = True, hang: bool = False, capacity: int = 2):
        self.fn, self.lose, self.retryable, self.hang, self.cap = fn, lose, retryable, hang, capacity
        self.pending: dict[Handle, dict] = {}
        self.cancelled: dict[Handle, str] = {}
        self.submits: list[tuple[str, int]] = []
        self.shut = False

    def capacity(self) -> int:
        return self.cap

    def submit(self, key, payload, attempt=0):
        h = Handle(key, attempt)
        self.submits.append((key, attempt))
        self.pending[h] = payload
        return h

    def wait(self, handles, timeout=None):
        out = []
        for h in handles:
            if h in self.cancelled:
                out.append(Outcome(h, lost=self.cancelled.pop(h)))
                self.pending.pop(h, None)
            elif self.hang:
                continue
            elif h in self.pending:
                payload = self.pending.pop(h)
                if h.attempt < self.lose:
                    out.append(Outcome(h, lost="worker died", retryable=self.retryable, node="n1"))
                else:
                    out.append(Outcome(h, result=self.fn(payload), node="n1"))
        if not out and self.hang and timeout:
            import time

            time.sleep(min(timeout, 0.05))
        return out

    def cancel(self, handle, reason="cancelled"):
        self.cancelled[handle] = reason

    def shutdown(self):
        self.shut = True
