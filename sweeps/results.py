"""The Parquet record: one file per run (a configuration at one seed) in runs/<name>/trials/, named by
its fingerprint, written under a temp name and os.replace'd, so a reader never sees a torn file;
per-epoch (and per-step) history in runs/<name>/history/. `read_results` returns one pyarrow Table
that pandas, polars and DuckDB read directly.

Columns (explicit schema): the fixed ones below, then one typed `p_<param>` column per parameter of
the searched methods (the full parameters are always in `params_json`).
"""
from __future__ import annotations

import json
import os
import types
import typing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sweeps.spec import SweepSpec, blind_metrics

METRIC_COLUMNS = ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy", "forget_acc", "val_acc",
                  "avg_gap", "forget_gap", "utility_drop", "forget_val_gap", "retain_examples_seen",
                  "mia_seconds", "du_mia", "indiscernibility", "du_indisc", "du_retain", "du_forget",
                  "du_val", "du_norm", "rte")
REFERENCE_METRICS = ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy", "forget_acc", "val_acc",
                     "indiscernibility")
TS = pa.timestamp("us", tz="UTC")

BASE_FIELDS = [
    pa.field("sweep", pa.string()), pa.field("trial_number", pa.int64()),
    pa.field("fingerprint", pa.string()), pa.field("state", pa.string()),  # COMPLETE | FAIL | PRUNED
    pa.field("error", pa.string()), pa.field("attempt", pa.int32()), pa.field("method", pa.string()),
    pa.field("params_json", pa.string()), pa.field("seed_index", pa.int32()),
    pa.field("split_seed", pa.int64()), pa.field("train_seed", pa.int64()),
    pa.field("unlearn_seed", pa.int64()), pa.field("data", pa.string()), pa.field("split", pa.string()),
    pa.field("model", pa.string()), pa.field("config_json", pa.string()),
    *[pa.field(m, pa.float64()) for m in METRIC_COLUMNS],
    *[pa.field(f"{ref}_{m}", pa.float64()) for ref in ("original", "retrain") for m in REFERENCE_METRICS],
    pa.field("runtime_s", pa.float64()), pa.field("total_s", pa.float64()),
    pa.field("device", pa.string()), pa.field("device_name", pa.string()),
    pa.field("gpu_fraction", pa.float64()), pa.field("node", pa.string()),
    pa.field("peak_mem_bytes", pa.int64()), pa.field("code_version", pa.string()),
    pa.field("started_at", TS), pa.field("ended_at", TS), pa.field("selection_rule", pa.string()),
    pa.field("phase", pa.string()),  # search (sampled by Optuna) | replicate (a top config on more seeds)
]
BASE_SCHEMA = pa.schema(BASE_FIELDS)

HISTORY_SCHEMA = pa.schema([
    pa.field("sweep", pa.string()), pa.field("fingerprint", pa.string()),
    pa.field("trial_number", pa.int64()), pa.field("method", pa.string()),
    pa.field("kind", pa.string()),  # epoch | step
    pa.field("epoch", pa.int64()), pa.field("step", pa.int64()), pa.field("loss", pa.float64()),
    pa.field("lr", pa.float64()), pa.field("elapsed_s", pa.float64()),
    pa.field("extra_json", pa.string()),  # whatever else the method logged
])


def _arrow_type(ann: Any) -> pa.DataType | None:
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        return _arrow_type(args[0]) if len(args) == 1 else None
    if typing.get_origin(ann) is typing.Literal:
        kinds = {type(a) for a in typing.get_args(ann)}
        return pa.string() if kinds == {str} else None
    return {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}.get(ann)


def param_fields(spec: SweepSpec) -> list[pa.Field]:
    """A typed `p_<name>` column for every parameter of the searched methods (same type in all)."""
    from unlearning.methods import get_method

    types_: dict[str, pa.DataType | None] = {}
    for m in spec.methods:
        for name, info in get_method(m).Config.model_fields.items():
            t = _arrow_type(info.annotation)
            types_[name] = t if types_.get(name, t) == t else None
    return [pa.field(f"p_{n}", t) for n, t in sorted(types_.items()) if t is not None]


def trial_schema(spec: SweepSpec) -> pa.Schema:
    meta = {b"unlearn_sweep.spec": json.dumps(spec.dump()).encode()}
    return pa.schema(BASE_FIELDS + param_fields(spec), metadata=meta)


def _ts(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).astimezone(timezone.utc)
    except ValueError:
        return None


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def trial_row(*, spec: SweepSpec, number: int, fp: str, config: dict[str, Any], seed_index: int,
              result: dict[str, Any] | None, error: str | None = None, attempt: int = 0,
              node: str = "", started_at: str = "", ended_at: str = "", phase: str = "search"
              ) -> dict[str, Any]:
    """One Parquet row from a TrialResult dict (or from None when the worker never returned one)."""
    r = result or {}
    state = r.get("state", "FAIL")
    err = error if error is not None else r.get("error")
    metrics = dict(r.get("metrics") or {})
    metrics.update(blind_metrics(metrics))
    ref = r.get("reference") or {}
    params = r.get("params") or config.get("params", {})
    seeds = config.get("seeds", {})
    row = {
        "sweep": spec.name, "trial_number": number, "fingerprint": fp, "state": state, "error": err,
        "attempt": attempt, "method": config.get("method"), "params_json": json.dumps(params, sort_keys=True),
        "seed_index": seed_index, "split_seed": seeds.get("split_seed"),
        "train_seed": seeds.get("train_seed"), "unlearn_seed": seeds.get("unlearn_seed"),
        "data": (config.get("data") or {}).get("name"), "split": json.dumps(config.get("split") or {},
                                                                            sort_keys=True),
        "model": config.get("model"), "config_json": json.dumps(config, sort_keys=True),
        "runtime_s": r.get("runtime_s"), "total_s": r.get("total_s"), "device": r.get("device"),
        "device_name": r.get("device_name"), "gpu_fraction": spec.resources.gpus_per_trial,
        "node": node or r.get("node"), "peak_mem_bytes": r.get("peak_mem_bytes"),
        "code_version": r.get("code_version"), "started_at": _ts(r.get("started_at") or started_at),
        "ended_at": _ts(r.get("ended_at") or ended_at), "selection_rule": spec.selection_rule,
        "phase": phase,
    }
    for m in METRIC_COLUMNS:
        row[m] = metrics.get(m)
    for name in ("original", "retrain"):
        for m in REFERENCE_METRICS:
            row[f"{name}_{m}"] = (ref.get(name) or {}).get(m)
    for k, v in params.items():
        row[f"p_{k}"] = v
    return row


def history_rows(spec: SweepSpec, number: int, fp: str, method: str, result: dict[str, Any] | None
                 ) -> list[dict[str, Any]]:
    out = []
    for kind, rows in (("epoch", (result or {}).get("history") or []),
                       ("step", (result or {}).get("step_history") or [])):
        for h in rows:
            extra = {k: v for k, v in h.items() if k not in ("epoch", "step", "loss", "lr", "elapsed_s")}
            out.append({"sweep": spec.name, "fingerprint": fp, "trial_number": number, "method": method,
                        "kind": kind, "epoch": h.get("epoch"), "step": h.get("step"),
                        "loss": _num(h.get("loss")), "lr": _num(h.get("lr")),
                        "elapsed_s": _num(h.get("elapsed_s")),
                        "extra_json": json.dumps(extra, default=str) if extra else None})
    return out


def _num(v):
    return float(v) if isinstance(v, (int, float)) else None


# -- writing and reading -------------------------------------------------------------------------

def write_atomic(table: pa.Table, path: Path) -> None:
    """Write under a hidden temp name in the same folder, then rename over the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_trial(run_dir: Path, row: dict[str, Any], history: list[dict[str, Any]],
                schema: pa.Schema) -> Path:
    """History first, then the trial row: a trial file that exists always has its history."""
    fp = row["fingerprint"]
    if history:
        write_atomic(pa.Table.from_pylist(history, schema=HISTORY_SCHEMA), run_dir / "history" /
                     f"{fp}.parquet")
    cols = {f.name for f in schema}
    path = run_dir / "trials" / f"{fp}.parquet"
    write_atomic(pa.Table.from_pylist([{k: v for k, v in row.items() if k in cols}], schema=schema), path)
    return path


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == ".parquet" and not p.name.startswith("."))


def _read_dir(folder: Path, empty: pa.Schema) -> pa.Table:
    tables = [pq.read_table(p) for p in _files(folder)]
    if not tables:
        return empty.empty_table()
    return pa.concat_tables(tables, promote_options="permissive").replace_schema_metadata(None)


def read_results(run_dir: str | Path) -> pa.Table:
    """Every trial row of a run directory (or of a trials/ folder) as one Table; temp files ignored."""
    d = Path(run_dir)
    return _read_dir(d / "trials" if (d / "trials").is_dir() else d, BASE_SCHEMA)


def read_history(run_dir: str | Path) -> pa.Table:
    return _read_dir(Path(run_dir) / "history", HISTORY_SCHEMA)


def read_row(run_dir: Path, fp: str) -> dict[str, Any] | None:
    p = run_dir / "trials" / f"{fp}.parquet"
    if not p.is_file():
        return None
    rows = pq.read_table(p).to_pylist()
    return rows[0] if rows else None


def known_fingerprints(run_dir: Path) -> set[str]:
    return {p.stem for p in _files(run_dir / "trials")}
