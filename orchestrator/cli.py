"""`unlearn-sweep`: the command line. It assembles the verbs (orchestrator/verbs/), runs the one asked
for, and turns every way it can end into one line and an exit code: bad input is one line on stderr
and exit code 2.

This module imports nothing heavy at its top: `main` installs the stop signals' handlers first, and
only then imports the verbs (pydantic, yaml, ...), so a signal a few milliseconds after the process
started still ends it in one line."""
from __future__ import annotations

import argparse
import os
import signal
import sys

from orchestrator.signals import StopSignals

EXIT_USAGE = 2
EXIT_FAILED = 1  # as orchestrator.verbs.common's


class _Parser(argparse.ArgumentParser):
    """argparse with bad usage as one line (not the usage block plus a line) and exit code 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)",
              file=sys.stderr)
        sys.exit(EXIT_USAGE)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("unlearn-sweep")
    except PackageNotFoundError:  # run from a source tree without installing
        from unlearning import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="unlearn-sweep", description="Sweeps of machine-unlearning methods: trials on Ray, "
                 "search by Optuna, every result in Parquet. Bad input is one line and exit code 2.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    from orchestrator.verbs import model, record, sweep, trial

    trial.add_parsers(sub)
    sweep.add_parsers(sub)
    record.add_parsers(sub)
    model.add_parsers(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done; 1 the sweep failed (failure budget, no trial completed) or could not
    write its record; 2 bad input (one line, nothing written); 128 + N stopped by signal N (one
    line: what stopped it and how to continue). Our signal handlers are live from the first
    instruction to the last (orchestrator/signals.py): interruptible here, where nothing is
    half-written; deferred while a driver holds a record."""
    stop = StopSignals()
    args = None
    with stop.installed():
        try:
            with stop.interruptible():
                args = build_parser().parse_args(argv)
                code = args.func(args)
                sys.stdout.flush()  # here, where a reader that left (a closed pipe) is caught below
                return code
        except BaseException as e:  # noqa: BLE001 - every ending becomes one line and an exit code
            return _ending(e, args, stop)  # signals deferred here: a second one does not cut it short


def _ending(e: BaseException, args, stop: StopSignals) -> int:
    """One line on stderr and the exit code for each way a command ends early; anything else (a
    bug, SystemExit) goes on up."""
    from unlearning.errors import Aborted, UserError
    from unlearning.redact import scrub_text

    if isinstance(e, (UserError, Aborted)):  # one line, whatever the message holds (a key with a newline)
        print(f"unlearn-sweep: error: {' '.join(scrub_text(str(e)).split())}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, UserError) else EXIT_FAILED
    if isinstance(e, KeyboardInterrupt):
        signum = getattr(e, "signum", None) or stop.signum or signal.SIGINT
        again = getattr(args, "continue_with", None)  # set by the verbs that can be continued
        print(f"unlearn-sweep: interrupted ({signal.Signals(signum).name})" + (f"; {again}" if again else ""),
              file=sys.stderr)
        return 128 + signum
    if isinstance(e, BrokenPipeError):  # `unlearn-sweep status x | head -1`: the reader left, not an
        # error. Point stdout at nothing so the exit-time flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if isinstance(e, OSError) and not os.environ.get("UNLEARN_SWEEP_DEBUG"):
        # the file system refused something not foreseen: still one line
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"unlearn-sweep: error: {e.strerror or e}{where}", file=sys.stderr)
        return EXIT_FAILED
    raise e


def console() -> None:
    """The `unlearn-sweep` program: `main`, then an exit that skips the interpreter's teardown.
    Freeing the modules of a sweep (torch, Ray, pandas, matplotlib) one object at a time took 1 to
    2 s after the last line was printed, for nothing the user sees. The exit is the last atexit
    handler (registered first, it runs after every other, and after Python has joined the non-daemon
    threads), so every handler a library or a plug-in registered still runs."""
    import atexit

    code: list[int] = []

    def exit_now() -> None:
        if not code:  # main raised (a bug): the normal ending, traceback and all
            return
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a reader that left, a closed stream
                pass
        os._exit(code[0])

    atexit.register(exit_now)
    code.append(main())
    sys.exit(code[0])


if __name__ == "__main__":
    console()
