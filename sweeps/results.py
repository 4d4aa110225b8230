"""The Parquet record: one file per run (a configuration at one seed) in runs/<name>/trials/, named by
its fingerprint, written under a temp name and os.replace'd, so a reader never sees a torn file;
per-epoch (and per-step) history in runs/<name>/history/; merged as the sweep goes into parts and a
compacted file (the layout's comment below). `read_results` returns one pyarrow Table that pandas,
polars and DuckDB read directly.

Columns (explicit schema): the fixed ones below, then one typed `p_<param>` column per parameter of
the searched methods (the full parameters are always in `params_json`).
"""
from __future__ import annotations

import json
import os
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sweeps.catalogue import CATALOGUE
from sweeps.spec import SweepSpec, blind_metrics
from unlearning.errors import Failure, FailureKind

# derived from the metric catalogue, in its order (the order of the record's columns)
METRIC_COLUMNS = tuple(m.name for m in CATALOGUE if m.column == "metrics")
EPOCH_METRICS = tuple(m.name for m in CATALOGUE if m.per_epoch)
REFERENCE_METRICS = tuple(m.name for m in CATALOGUE if m.reference)
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
    pa.field("seeds_in_trial", pa.int32()),  # how many runs its trial has: complete when all landed
    pa.field("run_id", pa.string()),  # the run directory's identity (run.json)
    # why a FAIL row failed (unlearning.errors.FailureKind: user_error, diverged, out_of_memory,
    # timeout, lost_worker, interrupted, error); null for COMPLETE rows and rows from before the column
    pa.field("failure_kind", pa.string()),
    # the run's parameters as its Optuna trial holds them ({"method": "ltu", "ltu.lr": 0.01, ...}: the
    # searched ones, named `<method>.<param>`), so the record joins with the study (`study_params`);
    # null in rows from before the column (`study_params` derives it for them)
    pa.field("study_params_json", pa.string()),
]
BASE_SCHEMA = pa.schema(BASE_FIELDS)

HISTORY_SCHEMA = pa.schema([
    pa.field("sweep", pa.string()), pa.field("fingerprint", pa.string()),
    pa.field("trial_number", pa.int64()), pa.field("method", pa.string()),
    pa.field("kind", pa.string()),  # epoch | step
    pa.field("epoch", pa.int64()), pa.field("step", pa.int64()), pa.field("loss", pa.float64()),
    pa.field("lr", pa.float64()), pa.field("elapsed_s", pa.float64()),
    pa.field("split_seed", pa.int64()), pa.field("train_seed", pa.int64()),
    pa.field("unlearn_seed", pa.int64()),
    # UA, RA, TA after the epoch, when the spec asks (base.eval.eval_every); null otherwise
    *[pa.field(m, pa.float64()) for m in EPOCH_METRICS],
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
    """The columns of a sweep's trial files. No spec in the footer: it lives once in spec.yaml (a
    footer copy cost 24 KB per one-row file and carried its free text everywhere)."""
    return pa.schema(BASE_FIELDS + param_fields(spec))


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
              result: dict[str, Any] | None, failure: Failure | None = None, attempt: int = 0,
              node: str = "", started_at: str = "", ended_at: str = "", phase: str = "search",
              seeds_in_trial: int | None = None, run_id: str | None = None) -> dict[str, Any]:
    """One Parquet row from a TrialResult dict, or from the driver's `failure` when the worker never
    returned one (a lost worker, a timeout, an interruption, a configuration rejected up front)."""
    r = result or {}
    if failure is None and r.get("failure"):
        failure = Failure.model_validate(r["failure"])
    elif failure is None and r.get("state", "FAIL") != "COMPLETE":  # a task function that says FAIL
        failure = Failure(kind=FailureKind.ERROR, message=str(r.get("error") or "failed, no reason given"))
    # a raced run never ran: PRUNED, as its configuration's Optuna trial
    state = r.get("state", "FAIL") if failure is None else \
        "PRUNED" if failure.kind == FailureKind.RACED else "FAIL"
    err = failure.message if failure is not None else None
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
        "phase": phase, "seeds_in_trial": seeds_in_trial, "run_id": run_id,
        "failure_kind": failure.kind.value if failure is not None else None,
        "study_params_json": json.dumps(study_names(spec, config.get("method"), params), sort_keys=True),
    }
    for m in METRIC_COLUMNS:
        row[m] = metrics.get(m)
    for name in ("original", "retrain"):
        for m in REFERENCE_METRICS:
            row[f"{name}_{m}"] = (ref.get(name) or {}).get(m)
    for k, v in params.items():
        row[f"p_{k}"] = v
    return row


def study_names(spec: SweepSpec, method: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """A run's parameters as the Optuna study names them: `method`, then `<method>.<param>` for each
    searched (non-fixed) parameter of its space (sweeps/space.py; fixed values never reach Optuna)."""
    space = spec.methods[method].space if method in spec.methods else {}
    return {"method": method, **{f"{method}.{p}": params[p] for p, d in space.items()
                                 if d.type != "fixed" and p in params}}


def study_params(runs, spec: SweepSpec | None = None):
    """The record's rows (a pandas DataFrame from `read_results`) with their parameters in Optuna's
    naming, ready to join `study.trials_dataframe()` on `trial_number` = `number`: columns
    `trial_number` and `params_method`, `params_<method>.<param>` (trials_dataframe's names).
    Rows written before the `study_params_json` column need `spec` (the run's spec.yaml) to know
    which parameters were searched."""
    import pandas as pd

    def names(r) -> dict[str, Any]:
        if isinstance(r.get("study_params_json"), str):
            return json.loads(r["study_params_json"])
        if spec is None:
            raise ValueError("rows from before study_params_json: pass the run's spec")
        return study_names(spec, r["method"], json.loads(r["params_json"]))

    rows = [{"trial_number": r["trial_number"], **{f"params_{k}": v for k, v in names(r).items()}}
            for r in runs.to_dict("records")]
    return pd.DataFrame(rows, index=runs.index)


def history_rows(spec: SweepSpec, number: int, fp: str, method: str, result: dict[str, Any] | None
                 ) -> list[dict[str, Any]]:
    out = []
    seeds = ((result or {}).get("config") or {}).get("seeds") or {}
    named = ("epoch", "step", "loss", "lr", "elapsed_s", *EPOCH_METRICS)
    for kind, rows in (("epoch", (result or {}).get("history") or []),
                       ("step", (result or {}).get("step_history") or [])):
        for h in rows:
            extra = {k: v for k, v in h.items() if k not in named}
            out.append({"sweep": spec.name, "fingerprint": fp, "trial_number": number, "method": method,
                        "kind": kind, "epoch": h.get("epoch"), "step": h.get("step"),
                        "loss": _num(h.get("loss")), "lr": _num(h.get("lr")),
                        "elapsed_s": _num(h.get("elapsed_s")),
                        **{f"{a}_seed": seeds.get(f"{a}_seed") for a in ("split", "train", "unlearn")},
                        **{m: _num(h.get(m)) for m in EPOCH_METRICS},
                        "extra_json": json.dumps(extra, default=str) if extra else None})
    return out


def _num(v):
    return float(v) if isinstance(v, (int, float)) else None


# -- writing and reading -------------------------------------------------------------------------
#
# Layout: trials/<fingerprint>.parquet holds one run each (written as it lands: a crash loses at
# most the run in flight); trials/part-<n>.parquet holds the runs of one periodic compaction (every
# COMPACT_EVERY runs the driver merges its one-run files into the next part: the cost of the runs
# merged, not of the record); trials/compacted.parquet holds the rest, merged with the parts by a
# full compaction (at the end of a sweep, on `analyze`, once PARTS_MAX parts exist). Newer wins for
# a fingerprint in several: a one-run file over the parts, a later part over an earlier one, any of
# them over the compacted file (a compaction deletes what it merged only after writing it, so a
# crash between leaves copies, never a gap). history/ is laid out the same way.

COMPACTED = "compacted.parquet"
PART = "part-"
COMPACT_EVERY = 64
PARTS_MAX = 16
MERGE_EVERY = 256  # one-run tables merged in memory while a folder is read


def is_single(p: Path) -> bool:
    """A one-run file (not the compacted file, not a part)."""
    return p.name != COMPACTED and not p.name.startswith(PART)


def _part_number(p: Path) -> int:
    try:
        return int(p.stem[len(PART):])
    except ValueError:
        return -1


def write_atomic(table: pa.Table, path: Path, **options) -> None:
    """Write under a hidden temp name in the same folder, then rename over the final name. On
    failure (disk full, read-only) the temp file is removed and the error raised: never a torn file.
    `options` go to pyarrow.parquet.write_table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp, **options)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def rows_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """`pa.Table.from_pylist(rows, schema=schema)` (keys not in the schema left out, missing ones
    null), column by column: a third of its time for a one-row table of a hundred columns."""
    return pa.Table.from_pydict({f.name: [r.get(f.name) for r in rows] for f in schema}, schema=schema)


def write_trial(run_dir: Path, row: dict[str, Any], history: list[dict[str, Any]],
                schema: pa.Schema, written: dict[Path, pa.Table] | None = None) -> Path:
    """History first, then the trial row: a trial file that exists always has its history. No column
    statistics in these one-run files (a third of a one-row file's bytes, and nothing to skip by);
    the compacted files keep them, for readers that filter. `written`: each file's table is added
    to it by path (the driver's compaction then merges them without reading the files back)."""
    fp = row["fingerprint"]
    out = []
    if history:
        out.append((rows_table(history, HISTORY_SCHEMA), run_dir / "history" / f"{fp}.parquet"))
    path = run_dir / "trials" / f"{fp}.parquet"
    out.append((rows_table([row], schema), path))
    for table, where in out:  # uncompressed, no dictionary: a few rows gain nothing, and cost time
        write_atomic(table, where, write_statistics=False, compression="none", use_dictionary=False)
        if written is not None:
            written[where] = table.replace_schema_metadata(None)
    return path


def _files(folder: Path) -> list[Path]:
    """The one-run files of a folder (temp files, hidden files, parts and the compacted file excluded)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == ".parquet" and not p.name.startswith(".")
                  and is_single(p))


def has_singles(folder: Path) -> bool:
    return bool(_files(folder))


def has_parts(folder: Path) -> bool:
    return bool(_parts(folder))


def _parts(folder: Path) -> list[Path]:
    """The part files of a folder, oldest first."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.suffix == ".parquet" and p.name.startswith(PART)
                   and _part_number(p) >= 0), key=_part_number)


@dataclass
class Scan:
    """A folder of the record as read: the rows (deduplicated by fingerprint), the files they came
    from, and one line per file that could not be read (torn, truncated, not Parquet)."""

    table: pa.Table
    files: list[Path] = field(default_factory=list)
    damaged: list[tuple[Path, str]] = field(default_factory=list)
    fresh: pa.Table | None = None  # the rows of the one-run files alone (what a part would hold)

    def singles(self) -> list[Path]:
        return [p for p in self.files if is_single(p)]

    def problems(self) -> list[str]:
        return [f"{p.parent.name}/{p.name}: unreadable ({why}); `resume` sets it aside and reruns its "
                "trial" for p, why in self.damaged]


def _read_one(path: Path, columns: list[str] | None = None) -> pa.Table:
    # ParquetFile, not read_table: half the cost for a one-row file (read_table builds a dataset)
    with pq.ParquetFile(path) as f:
        return f.read(columns=columns).replace_schema_metadata(None)


def scan(folder: Path, empty: pa.Schema, key: str = "fingerprint",
         known: dict[Path, pa.Table] | None = None) -> Scan:
    """Read the compacted file, the parts and the one-run files of `folder`; a file that cannot be
    read is reported, never raised. Rows of a newer file replace the older rows of their `key`
    (the layout's comment above). `known`: tables of files this process wrote (`write_trial`),
    used instead of reading those files back."""
    import pyarrow.compute as pc

    layers, pending, damaged, files = [], [], [], []
    paths = ([folder / COMPACTED] if (folder / COMPACTED).is_file() else []) + _parts(folder) + _files(folder)
    for p in paths:
        try:
            t = known[p] if known and p in known else _read_one(p)
        except Exception as e:  # noqa: BLE001 - ArrowInvalid, OSError: torn, truncated, garbage
            damaged.append((p, " ".join(f"{type(e).__name__}: {e}".split())[:160]))
            continue
        files.append(p)
        if not is_single(p):
            layers.append(t)
        else:
            pending.append(t)
            if len(pending) == MERGE_EVERY:  # one chunk per column, not one per file: a record never
                # compacted (30,000 files) would otherwise hold millions of tiny arrays (gigabytes)
                layers.append(pa.concat_tables(pending, promote_options="permissive").combine_chunks())
                pending = []
    if pending:
        layers.append(pa.concat_tables(pending, promote_options="permissive").combine_chunks())
    n_singles = len(layers) - sum(not is_single(p) for p in files)  # the last n layers: one-run files
    fresh = (pa.concat_tables(layers[len(layers) - n_singles:], promote_options="permissive")
             if n_singles else None)
    # newest first: each older layer loses the rows whose key a newer one holds
    seen: pa.Array | None = None
    kept = []
    for t in reversed(layers):
        keys = t.column(key).unique()
        if seen is not None and len(seen):
            t = t.filter(pc.invert(pc.is_in(t.column(key), seen)))
        kept.append(t)
        seen = keys if seen is None else pa.concat_arrays([seen, keys.cast(seen.type)]).unique()
    if not kept:
        return Scan(empty.empty_table(), files, damaged)
    return Scan(pa.concat_tables(kept[::-1], promote_options="permissive"), files, damaged, fresh)


def scan_record(run_dir: Path) -> dict[str, Scan]:
    """trials/ and history/ as read by `scan`: {"trials": Scan, "history": Scan}."""
    return {sub: scan(run_dir / sub, schema) for sub, schema in (("trials", BASE_SCHEMA),
                                                                 ("history", HISTORY_SCHEMA))}


ROW_ORDER = [("trial_number", "ascending"), ("split_seed", "ascending"), ("train_seed", "ascending"),
             ("unlearn_seed", "ascending"), ("ended_at", "ascending")]


def read_results(run_dir: str | Path) -> pa.Table:
    """Every trial row of a run directory (or of a trials/ folder) as one Table, ordered by trial
    number, then seeds (then end time: a run redone under a new code version after the old one);
    temp files and unreadable files left out (`scan` reports them)."""
    d = Path(run_dir)
    return in_row_order(scan(d / "trials" if (d / "trials").is_dir() else d, BASE_SCHEMA).table)


def in_row_order(t: pa.Table) -> pa.Table:
    """Trial rows in ROW_ORDER (the columns of it the table has)."""
    return t.sort_by([k for k in ROW_ORDER if k[0] in t.column_names])


def read_history(run_dir: str | Path) -> pa.Table:
    return scan(Path(run_dir) / "history", HISTORY_SCHEMA).table


def quarantine(run_dir: Path, damaged: list[tuple[Path, str]]) -> list[str]:
    """Move unreadable record files to run_dir/quarantine/<folder>/ (never deleted: someone may
    want to look), returning one notice line each. Their runs are then missing, and rerun."""
    notes = []
    for p, why in damaged:
        dest = run_dir / "quarantine" / p.parent.name / p.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(p, dest)
        notes.append(f"{p.parent.name}/{p.name} is unreadable ({why}); moved to "
                     f"quarantine/{p.parent.name}/, its run will be redone")
    return notes


def compact(run_dir: Path, scans: dict[str, Scan] | None = None, full: bool = True,
            written: dict[Path, pa.Table] | None = None) -> int:
    """Merge the one-run files of trials/ and history/, atomically, then delete the merged files.
    full: the parts and the one-run files into the compacted file (the parts deleted too); not full:
    the one-run files alone into the next part (only they are read: the cost of what is merged, not
    of the record), or into the compacted file while there is none, or fully once PARTS_MAX parts
    exist. Only the holder of the driver lock may call it (a driver writing one-run files meanwhile
    would lose them). Damaged files are left for `quarantine`. `scans`: the folders as the caller
    has just read them ({"trials": Scan, ...}), so they are read once; `written`: the tables of the
    one-run files this process wrote (`write_trial`), used instead of reading them back (those
    merged are taken out of it). Returns the number of files merged."""
    merged = 0
    known = written if written is not None else {}
    for sub, schema in (("trials", BASE_SCHEMA), ("history", HISTORY_SCHEMA)):
        folder = run_dir / sub
        parts, singles = _parts(folder), _files(folder)
        if not singles and not (full and parts):  # nothing to merge: nothing is even read
            continue
        whole = full or not (folder / COMPACTED).is_file() or len(parts) + 1 >= PARTS_MAX
        if whole:
            got = (scans or {}).get(sub) or scan(folder, schema, known=known)
            gone = [p for p in got.files if p.name != COMPACTED]  # the parts and one-run files read
            if not gone:
                continue
            write_atomic(got.table, folder / COMPACTED)
        else:  # the next part: the one-run files' rows alone
            read = (scans or {}).get(sub)
            if read is not None:  # read already
                gone, rows = read.singles(), read.fresh
            else:
                tables, gone = [], []
                for p in singles:
                    try:
                        tables.append(known[p] if p in known else _read_one(p))
                    except Exception:  # noqa: BLE001 - damaged: left for `quarantine`
                        continue
                    gone.append(p)
                rows = pa.concat_tables(tables, promote_options="permissive") if tables else None
            if not gone or rows is None:
                continue
            number = max([_part_number(p) for p in parts] + [0]) + 1
            write_atomic(rows, folder / f"{PART}{number:06d}.parquet")
        for p in gone:
            p.unlink(missing_ok=True)
        merged += len(gone)
        left = set(singles) - set(gone)
        for p in [p for p in known if p.parent == folder and p not in left]:  # merged, or gone meanwhile
            del known[p]
    return merged


def record_states(trials: Scan) -> dict[str, tuple[str, FailureKind | None]]:
    """fingerprint -> (state, failure kind) of every recorded run (`trials`: the trials/ folder as
    read by `scan`): what the driver needs to decide whether a proposed run is already done. A FAIL
    row from before the failure_kind column counts as an error (kept, not rerun)."""
    t = trials.table
    kinds = t.column("failure_kind").to_pylist() if "failure_kind" in t.column_names else [None] * len(t)
    return {fp: (st, None if st == "COMPLETE" else FailureKind(kind or "error")) for fp, st, kind in
            zip(t.column("fingerprint").to_pylist(), t.column("state").to_pylist(), kinds)}


def read_row(run_dir: Path, fp: str) -> dict[str, Any] | None:
    """One run's row: its one-run file, else its row in the compacted file."""
    p = run_dir / "trials" / f"{fp}.parquet"
    try:
        if p.is_file():
            rows = _read_one(p).to_pylist()
            return rows[0] if rows else None
        folder = run_dir / "trials"
        for c in [*_parts(folder)[::-1], folder / COMPACTED]:  # newest first
            if c.is_file():
                rows = pq.read_table(c, filters=[("fingerprint", "=", fp)]).to_pylist()
                if rows:
                    return rows[-1]
    except Exception:  # noqa: BLE001 - a damaged file reads as missing; the run is redone
        return None
    return None


def failure_reasons(table: pa.Table, top: int = 5) -> list[tuple[str, int]]:
    """The most common reasons among FAIL rows: [(the first such error, count)], where errors that
    differ only in numbers and ids (`reason_key`) count as one reason. Raced runs (PRUNED) never
    ran: not failures."""
    if table.num_rows == 0 or "state" not in table.column_names:
        return []
    counts: dict[str, list] = {}
    for st, err in zip(table.column("state").to_pylist(), table.column("error").to_pylist()):
        if st == "FAIL":
            text = " ".join(str(err or "no reason recorded").split())
            counts.setdefault(reason_key(text), [text[:300], 0])[1] += 1
    return [(ex, n) for ex, n in sorted(counts.values(), key=lambda v: -v[1])][:top]


def reason_key(error: str) -> str:
    """An error message with its run-specific parts (numbers, hex ids) blurred, cut to one line."""
    import re

    text = " ".join(str(error).split())
    text = re.sub(r"\b[0-9a-f]{12,}\b", "…", text)
    text = re.sub(r"\d+(\.\d+)?(e-?\d+)?", "#", text)
    return text[:200]


# -- what a read-only verb reports about the record -----------------------------------------------

def nonfinite(table: pa.Table, limit: int = 10) -> list[str]:
    """One line per value of a COMPLETE row that is NaN or infinite (a metric column: a worker
    never writes one, so it came from outside), naming the trial, its seed and the column; at most
    `limit` lines, then a count of the rest. Null (a metric not computed) is not listed."""
    import pyarrow.compute as pc

    if table.num_rows == 0 or "state" not in table.column_names:
        return []
    complete = table.filter(pc.equal(table.column("state"), "COMPLETE"))
    found = []
    for name in complete.column_names:
        col = complete.column(name)
        if not pa.types.is_floating(col.type) or name == "gpu_fraction":
            continue
        if col.null_count == 0 and np.isfinite(col.to_numpy()).all():  # the usual case, in one call
            continue
        bad = pc.fill_null(pc.invert(pc.is_finite(col)), False)
        for i in pc.indices_nonzero(bad).to_pylist():
            found.append((complete.column("trial_number")[i].as_py(), complete.column("seed_index")[i].as_py(),
                          complete.column("fingerprint")[i].as_py(), name, col[i].as_py()))
    lines = [f"trial {t} seed {s} (run {fp[:12]}): {name} is {v} in a COMPLETE row (not a number the "
             "analysis can use)" for t, s, fp, name, v in sorted(found, key=lambda f: (f[0], f[1], f[3]))]
    return lines[:limit] + ([f"... and {len(lines) - limit} more non-finite value(s)"] if len(lines) > limit
                            else [])


def record_problems(spec: SweepSpec, run_dir: Path, scans: dict[str, Scan] | None = None
                    ) -> tuple[Any, list[str]]:
    """(the study, read only; one line per problem of the record): files that cannot be read, the
    journal's damage, trials the journal has whose runs Parquet lacks. Touches nothing. `scans`:
    the record as the caller has read it (`scan_record`), so it is read once."""
    from sweeps.rundir import run_identity
    from sweeps.journal import FINISHED_NAMES, state_name, superseded
    from sweeps.study_view import load_study_readonly

    scans = scans or scan_record(run_dir)
    lines = [ln for sub in ("trials", "history") for ln in scans[sub].problems()]
    lines += nonfinite(scans["trials"].table)
    study, notice = load_study_readonly(spec, run_dir)
    if notice:
        lines.append(notice)
    if study is not None:
        have, sup = set(scans["trials"].table.column("fingerprint").to_pylist()), superseded(study)
        mine = (run_identity(run_dir) or {}).get("run_id")
        lost = [t.number for t in study.get_trials(deepcopy=False)
                if state_name(t) in FINISHED_NAMES and t.number not in sup and "method" in t.params
                and (mine is None or t.user_attrs.get("run_id", mine) == mine)
                and any(fp not in have for fp in t.user_attrs.get("fingerprints", []))]
        if lost:
            shown = ", ".join(map(str, lost[:10])) + (" ..." if len(lost) > 10 else "")
            lines.append(f"{len(lost)} trial(s) in the journal have runs missing from Parquet "
                         f"(trials {shown}); `resume` reruns them")
    return study, lines
