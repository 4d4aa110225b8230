"""`unlearn-sweep`: the command line. It assembles the verbs (orchestrator/verbs/), runs the one asked
for, and turns every way it can end into one line and an exit code: bad input is one line on stderr
and exit code 2."""
from __future__ import annotations

import argparse
import os
import sys

from orchestrator.verbs import model, record, sweep, trial
from orchestrator.verbs.common import EXIT_FAILED
from unlearning.errors import Aborted, UserError
from unlearning.redact import scrub_text

EXIT_USAGE = 2


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
    trial.add_parsers(sub)
    sweep.add_parsers(sub)
    record.add_parsers(sub)
    model.add_parsers(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done; 1 the sweep failed (failure budget, no trial completed) or could not
    write its record; 2 bad input (one line, nothing written); 128 + N stopped by signal N."""
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, where a reader that left (a closed pipe) is caught below
        return code
    except UserError as e:
        print(f"unlearn-sweep: error: {scrub_text(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except Aborted as e:
        print(f"unlearn-sweep: error: {scrub_text(str(e))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", 2)
        print(f"unlearn-sweep: interrupted ({'SIGINT' if signum == 2 else getattr(e, 'args', [''])[0]}); "
              "`unlearn-sweep resume` continues", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:  # `unlearn-sweep status x | head -1`: the reader left, not an error
        # (an OSError too: caught first). Point stdout at nothing so the exit-time flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # the file system refused something not foreseen: still one line
        if os.environ.get("UNLEARN_SWEEP_DEBUG"):
            raise
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"unlearn-sweep: error: {e.strerror or e}{where}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
