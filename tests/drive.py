"""A real `unlearn-sweep` process for fault-injection tests, with the trial function replaced by a
fast fake (tests.tasks.fake_run_task): python -m tests.drive run SPEC --out DIR | resume DIR ...
Everything else (argument parsing, signals, Ray, the record, exit codes) is the CLI's own."""
import sys

import unlearning.tasks
from tests.tasks import fake_run_task

unlearning.tasks.run_task = fake_run_task  # the runner looks it up when it builds the backend

from orchestrator.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
