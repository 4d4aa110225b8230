"""Plain Optuna, in process: `study.optimize` over the quickstart's space, the project's own trial
function as the objective, the constraint set on the trial (`trial.set_constraint`, Optuna 5's
successor of the samplers' `constraints_func`, deprecated since 5.0), TPE as the spec builds it, re-seeded
per ask as the sweep does (bench/peers/common.py: the same configurations in every contender).

    .venv/bin/python bench/peers/optuna_loop.py --trials 4 --out /tmp/optuna.json
"""
from __future__ import annotations

import argparse

from common import quickstart, run_one, sampler, suggest, write


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = quickstart(args.trials)
    trials = []

    def objective(trial):
        method, params = suggest(trial, spec)
        out = run_one(spec, method, params)
        trials.append(out)
        if out["values"] is None:
            raise optuna.TrialPruned()  # a failed trial: not told as values
        trial.set_constraint(*out["constraint"])
        return out["values"]

    def next_sampler(study, _trial):  # the sweep's seeding: the same configurations as the others
        study.sampler = sampler(spec, len(study.trials))

    study = optuna.create_study(directions=[o.direction for o in spec.objectives],
                                sampler=sampler(spec, 0))
    study.optimize(objective, n_trials=args.trials, callbacks=[next_sampler])
    write(args.out, "optuna", trials)


if __name__ == "__main__":
    main()
