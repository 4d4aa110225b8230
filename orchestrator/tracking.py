"""Trackers: where people watch trials (W&B). Parquet is the record; a tracker is a view, so a tracker
that fails warns once and the sweep goes on. The driver calls, for each trial:
start -> log (per epoch, as rows arrive) -> finish; then close at the end of the sweep.

    tracker = make_tracker({"wandb": {"mode": "offline"}}, sweep_name, out_dir)

W&B: one run per trial, grouped by the sweep's name, config = the trial's parameters (and its whole
TrialConfig under `trial`), per-epoch rows logged as they arrive, metrics in the summary at the end;
and, once the report is written, one sweep-level run in the same group (`log_sweep_report`: job type
"sweep", the spec as config, the hypervolume and counts in the summary, the front, the field's table
and every configuration as W&B tables, the report's plots as images).
Mode "offline" by default (runs land under `<out_dir>/wandb/`; `wandb sync` uploads them later),
"online" when configured (needs WANDB_API_KEY or `wandb login`), "disabled" for a no-op. Nothing
that looks like a secret (keys named *api_key*, *token*, *secret*, *password*, ..., or the value of
WANDB_API_KEY anywhere) is logged: see `scrub`.
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Tracker(Protocol):
    def start(self, key: str, number: int, params: dict[str, Any], config: dict[str, Any]) -> None: ...

    def log(self, key: str, row: dict[str, Any]) -> None: ...

    def finish(self, key: str, result: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class NullTracker:
    """Tracks nothing (W&B disabled)."""

    def start(self, key, number, params, config): pass

    def log(self, key, row): pass

    def finish(self, key, result): pass

    def close(self): pass


class SafeTracker:
    """Any tracker as a view that never stops a sweep: a call that raises is warned about once (with
    the hook's name and the error), then every later call is still tried."""

    def __init__(self, inner: Tracker, warn=None):
        self.inner, self.warn, self._warned = inner, warn or (lambda msg: None), False

    def _call(self, hook: str, *args) -> None:
        try:
            getattr(self.inner, hook)(*args)
        except Exception as e:  # noqa: BLE001
            if not self._warned:
                self._warned = True
                self.warn(f"warning: tracker {hook} failed ({type(e).__name__}: {e}); the sweep goes on")

    def start(self, key, number, params, config):
        self._call("start", key, number, params, config)

    def log(self, key, row):
        self._call("log", key, row)

    def finish(self, key, result):
        self._call("finish", key, result)

    def close(self):
        self._call("close")


# -- secrets: one scrubber for everything (unlearning/redact.py) --------------------------------

from unlearning.redact import REDACTED, scrub, scrub_text  # noqa: E402,F401 - re-exported


# -- W&B -----------------------------------------------------------------------------------------

MODES = ("offline", "online", "disabled")
_KEYS = {"mode", "project", "entity", "dir", "tags", "notes", "job_type"}


def _scalars(row: dict[str, Any], prefix: str = "") -> dict[str, float | int | str | bool]:
    """Loggable values of a (nested) row: numbers, bools and short strings, nested keys joined by /."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_scalars(v, f"{name}/"))
        elif isinstance(v, bool) or isinstance(v, int) or (isinstance(v, str) and len(v) <= 500):
            out[name] = v
        elif isinstance(v, float):
            out[name] = v if math.isfinite(v) else str(v)
    return out


class WandbTracker:
    """One W&B run per trial, grouped by sweep. Any W&B failure: one warning, then a no-op."""

    def __init__(self, sweep_name: str, *, mode: str = "offline", project: str = "unlearn-sweep",
                 entity: str | None = None, dir: str | Path | None = None, tags: list[str] | None = None,
                 notes: str | None = None, job_type: str = "trial", warn=None,
                 mode_from: str = "tracking.wandb.mode", dir_from: str = "tracking.wandb.dir"):
        self.sweep, self.mode, self.project, self.entity = sweep_name, mode, project, entity
        self.dir = Path(dir) if dir is not None else None
        self.tags, self.notes, self.job_type = scrub(list(tags or [])), scrub(notes), job_type
        self._warn = warn  # None: warnings.warn (a driver passes its own log line)
        self._runs: dict[str, Any] = {}
        self._broken = False
        self._wandb = None
        if mode not in MODES:
            self._fail(f"{mode_from}: unknown mode {mode!r} (expected one of {', '.join(MODES)})")
            return
        if mode == "disabled":
            self._broken = True  # quietly off
            return
        try:
            import wandb
            self._wandb = wandb
        except Exception as e:  # not installed, or broken
            self._fail(f"cannot import wandb ({type(e).__name__}: {e})")
            return
        if self.dir is not None:
            try:  # fail here, once, rather than inside every wandb.init
                self.dir.mkdir(parents=True, exist_ok=True)
                probe = self.dir / f".write-test-{os.getpid()}"
                probe.write_text("")
                probe.unlink()
            except OSError as e:
                self._fail(f"{dir_from}: {self.dir} is not writable ({e.strerror or e})")

    @property
    def active(self) -> bool:
        return not self._broken

    def _fail(self, why: str) -> None:
        """Warn once; every later call is a no-op. The sweep goes on (Parquet is the record)."""
        if not self._broken:  # one line, on one channel
            msg = scrub(f"W&B tracking off for the rest of sweep {self.sweep!r}: {why}")
            if self._warn is not None:
                self._warn(f"warning: {msg}")
            else:
                warnings.warn(msg, RuntimeWarning, stacklevel=3)
        self._broken = True
        for run in list(self._runs.values()):
            try:
                run.finish(exit_code=1)
            except Exception:
                pass
        self._runs.clear()

    def _settings(self):
        return self._wandb.Settings(
            console="off", silent=True, save_code=False, disable_git=True, x_disable_stats=True,
            x_disable_machine_info=True, x_save_requirements=False, disable_job_creation=True)

    def start(self, key: str, number: int, params: dict[str, Any], config: dict[str, Any]) -> None:
        if self._broken:
            return
        assert self._wandb is not None  # imported: else broken
        try:
            if key in self._runs:  # a retry of the same trial: one run per trial, continue it
                return
            cfg = scrub({**params, "trial_number": number, "fingerprint": key, "trial": config})
            self._runs[key] = self._wandb.init(
                project=self.project, entity=self.entity, group=self.sweep, job_type=self.job_type,
                name=f"{self.sweep}-{number}" + (f"-seed{params['seed_index']}" if "seed_index" in params
                                                  else ""), tags=self.tags or None, notes=self.notes,
                config=cfg, dir=str(self.dir) if self.dir else None, mode=self.mode,
                reinit="create_new", settings=self._settings())
        except Exception as e:
            self._fail(f"wandb.init failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")

    def log(self, key: str, row: dict[str, Any]) -> None:
        run = None if self._broken else self._runs.get(key)
        if run is None:
            return
        try:
            run.log(scrub(_scalars(row)))
        except Exception as e:
            self._fail(f"logging failed ({type(e).__name__}: {e})")

    def finish(self, key: str, result: dict[str, Any]) -> None:
        run = None if self._broken else self._runs.pop(key, None)
        if run is None:
            return
        try:
            summary = dict(_scalars(result.get("metrics") or {}))
            for k in ("state", "error", "failure_kind", "runtime_s", "total_s", "device", "node", "method"):
                if result.get(k) is not None:
                    summary[k] = result[k]
            for k, v in scrub(_scalars(summary)).items():
                run.summary[k] = v
            run.finish(exit_code=0 if result.get("state", "COMPLETE") == "COMPLETE" else 1)
        except Exception as e:
            self._fail(f"finishing a run failed ({type(e).__name__}: {e})")

    def log_sweep(self, name: str, config: dict[str, Any], summary: dict[str, Any],
                  tables: dict[str, Any], images: dict[str, Path]) -> None:
        """One sweep-level run (job type "sweep") in the trials' group: `config`, `summary` scalars,
        `tables` (name -> pandas DataFrame) as W&B tables, `images` (name -> file) as W&B images. Its
        id is fixed per sweep, so `wandb sync` of several (a run, then a resume) updates one run."""
        if self._broken:
            return
        assert self._wandb is not None  # imported: else broken
        try:
            run = self._wandb.init(
                project=self.project, entity=self.entity, group=self.sweep, job_type="sweep", name=name,
                id=_run_id(name), resume="allow", tags=self.tags or None, notes=self.notes,
                config=scrub(config), dir=str(self.dir) if self.dir else None, mode=self.mode,
                reinit="create_new", settings=self._settings())
            logged: dict[str, Any] = {}
            for key, df in tables.items():
                logged[key] = self._wandb.Table(dataframe=_plain_frame(df))
            for key, path in images.items():
                if Path(path).is_file():
                    logged[key] = self._wandb.Image(str(path))
            run.log(logged)
            for k, v in scrub(_scalars(summary)).items():
                run.summary[k] = v
            run.finish(exit_code=0)
        except Exception as e:
            self._fail(f"the sweep's run failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")

    def close(self) -> None:
        for key in list(self._runs):  # trials that never finished (driver stopped, cancelled)
            self.finish(key, {"state": "FAIL", "error": "sweep ended before the trial finished"})
        if self._wandb is not None and not self._broken:
            try:  # run.finish() returns before the offline files are flushed; this waits for them
                self._wandb.teardown()
            except Exception as e:
                self._fail(f"teardown failed ({type(e).__name__}: {e})")


def _run_id(name: str) -> str:
    """A W&B run id from a name: its allowed characters, at most 64."""
    import re

    return re.sub(r"[^A-Za-z0-9_-]", "-", name)[:64]


def _plain_frame(df):
    """A DataFrame W&B's Table takes: nullable integers and NaN as None, objects as they are."""
    return df.astype(object).where(df.notna(), None)


def log_sweep_report(spec, run_dir: Path, analysis, report_dir: Path, warn=None) -> bool:
    """The sweep-level W&B run (see the module docstring) of a sweep whose report was just written;
    nothing when W&B is off. A failure warns once (a view: Parquet is the record). Returns whether
    a run was logged."""
    from sweeps.report import tables as T
    from sweeps.report.summary import to_json
    from sweeps.rundir import run_identity

    run_id = (run_identity(Path(run_dir)) or {}).get("run_id", spec.name)
    tracker = make_tracker(spec.tracking.model_dump(), run_id, Path(run_dir), warn=warn)
    if not isinstance(tracker, WandbTracker) or not tracker.active:
        return False
    a = analysis
    doc = to_json(a)
    summary = {k: doc[k] for k in ("configurations", "complete", "feasible", "hypervolume", "selection_rule",
                                   "evidence")}
    summary["reference_point"] = ", ".join(f"{x:g}" for x in a.reference_point)
    for rule in a.rules:
        p = a.picks[rule.name]
        summary[f"pick/{rule.name}"] = ", ".join(f"{m} trial {int(t)} (n = {int(n)})" for m, t, n in
                                                 zip(p["method"], p["trial_number"], p["n"]))
    keep = ["trial_number", "method", "params_json", "n", "replicated", "feasible",
            *[c for o in spec.objectives for c in (o.metric, f"{o.metric}_std", f"{o.metric}_ci")]]
    tables = {"table/front": T.front_table(a.front, spec), "table/field": a.table,
              "table/configurations": a.configs[[c for c in keep if c in a.configs]]}
    images = {f"plot/{n}": report_dir / f"{n}.png" for n in ("front", "history", "epochs")}
    tracker.log_sweep(f"{spec.name}-sweep", spec.dump(), summary, tables, images)
    tracker.close()
    return tracker.active


def make_tracker(tracking_cfg: dict[str, Any] | None, sweep_name: str, out_dir: Path, warn=None
                 ) -> Tracker:
    """The tracker a sweep asks for. tracking_cfg: {"wandb": {"mode", "project", "entity", "dir",
    "tags", "notes"}} (a missing mode means $WANDB_MODE, else "offline"); {"wandb": false}, mode
    "disabled" or WANDB_MODE=disabled in the environment (tests, CI: a kill switch over the spec)
    -> NullTracker. `dir` defaults to out_dir (runs go to <out_dir>/wandb/)."""
    cfg = (tracking_cfg or {}).get("wandb", {})
    if cfg is False or cfg is None:
        return NullTracker()
    if cfg is True:
        cfg = {}
    if not isinstance(cfg, dict):
        warnings.warn(f"tracking.wandb should be a mapping, got {type(cfg).__name__}; W&B off",
                      RuntimeWarning, stacklevel=2)
        return NullTracker()
    unknown = set(cfg) - _KEYS
    if unknown:
        warnings.warn(f"tracking.wandb: ignoring unknown key(s) {', '.join(sorted(unknown))}",
                      RuntimeWarning, stacklevel=2)
    mode, mode_from = cfg.get("mode"), "tracking.wandb.mode"
    if not mode:
        mode, mode_from = os.environ.get("WANDB_MODE") or "offline", "$WANDB_MODE"
    if mode == "disabled" or os.environ.get("WANDB_MODE") == "disabled":  # the env is a kill switch
        return NullTracker()
    kwargs = {k: cfg[k] for k in ("project", "entity", "tags", "notes", "job_type") if cfg.get(k)}
    return WandbTracker(sweep_name, mode=mode, dir=cfg.get("dir") or Path(out_dir), warn=warn,
                        mode_from=mode_from, dir_from="tracking.wandb.dir" if cfg.get("dir") else
                        "the run directory's wandb/", **kwargs)
