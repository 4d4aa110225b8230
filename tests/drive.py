"""A real `unlearn-sweep` process for fault-injection tests, with the trial function replaced by a
fast fake (tests.tasks.fake_run_task): python -m tests.drive run SPEC --out DIR | resume DIR ...
Everything else (argument parsing, signals, Ray, the record, exit codes) is the CLI's own.

$SIGNAL_AT=MOMENT[:SIGNAL] sends this driver SIGNAL (default SIGTERM) once, at one moment of its
life (tests.tasks.signal_driver; $SIGNAL_DIR holds the mark that it was sent):
  spec      while the spec is loaded (before anything is written)
  record    just after the run directory is taken (locked, repaired)
  ray_init  as ray.init returns (Ray's own SIGTERM handler would be live then)
  probe     while a worker checks the base config
  oracle    while the oracle phase trains a model
  trial     while the first trial runs
  compact   while the record is compacted at the end
  report    while the report is written
"""
import functools
import os
import sys
import types

from tests.tasks import fake_run_task, signal_driver

# the runner looks run_task up when it builds the backend. A stand-in module, not the real one
# patched: importing that loads torch (seconds on a busy machine), and the process must reach the
# CLI's main, which installs the signal handlers, as quickly as the real `unlearn-sweep` does
sys.modules["unlearning.tasks"] = types.SimpleNamespace(run_task=fake_run_task)
os.environ["DRIVE_PID"] = str(os.getpid())  # Ray's workers inherit it (they signal the driver)


def _signal_first(moment: str, module, name: str) -> None:
    """`module.name`, wrapped to signal the driver at `moment` before it runs."""
    fn = getattr(module, name)

    @functools.wraps(fn)
    def wrapped(*a, **kw):
        signal_driver(moment)
        return fn(*a, **kw)

    setattr(module, name, wrapped)


if os.environ.get("SIGNAL_AT"):
    import orchestrator.record
    import sweeps.report.summary
    import sweeps.results
    import sweeps.spec

    _signal_first("spec", sweeps.spec, "load_spec")
    _signal_first("compact", sweeps.results, "compact")
    _signal_first("report", sweeps.report.summary, "write_file")
    _record_open = orchestrator.record.Record.open.__func__

    def _open_then_signal(cls, *a, **kw):
        rec = _record_open(cls, *a, **kw)
        signal_driver("record")
        return rec

    orchestrator.record.Record.open = classmethod(_open_then_signal)
    if os.environ["SIGNAL_AT"].startswith("ray_init"):
        import ray

        _init = ray.init

        def _init_then_signal(*a, **kw):
            ctx = _init(*a, **kw)
            signal_driver("ray_init")
            return ctx

        ray.init = _init_then_signal

from orchestrator.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
