"""The verbs of `unlearn-sweep`, grouped by what they touch: trial.py (one trial, the methods),
sweep.py (run, resume, replicate, audit, presets), record.py (status, analyze, export, compare).
Each module adds its subcommands with `add_parsers(sub)`; orchestrator/cli.py assembles them."""
