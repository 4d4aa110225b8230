"""Ray Tune + OptunaSearch: the quickstart's space as a define-by-run function (the sweep's own
`suggest`), the project's own trial function as a function trainable, one trial at a time on an
embedded Ray (loopback only, Ray's defaults otherwise: token authentication, the dashboard, a
trainable process per trial).

The constraint: OptunaSearch tells Optuna only the objectives, so `ConstrainedOptunaSearch` sets
the trial's constraint (Optuna 5's `trial.set_constraint`, which its samplers read) from the
reported `constraint` before OptunaSearch tells the study.

    .venv/bin/python bench/peers/ray_tune.py --trials 4 --out /tmp/tune.json
"""
from __future__ import annotations

import argparse
import json
import tempfile

from ray.tune.search.optuna import OptunaSearch

from common import quickstart, run_one, sampler, suggest, write

N_TRIALS = 4  # set by main; the search's functions are pickled by Tune, so they live up here


class ConstrainedOptunaSearch(OptunaSearch):
    def suggest(self, trial_id):  # the sweep's seeding: the same configurations as the others
        if self._ot_study is not None:
            self._ot_study.sampler = sampler(quickstart(N_TRIALS), len(self._ot_study.trials))
        return super().suggest(trial_id)

    def on_trial_complete(self, trial_id, result=None, error=False):
        if result and result.get("constraint_key") and trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_constraint(result["constraint_key"], result["constraint"])
        super().on_trial_complete(trial_id, result, error)


def space(trial):
    method, params = suggest(trial, quickstart(N_TRIALS))
    return {"run": json.dumps([method, params])}


def trainable(config):
    from ray import tune

    spec = quickstart(N_TRIALS)
    method, params = json.loads(config["run"])
    out = run_one(spec, method, params)
    metrics = {"start": out["start"], "end": out["end"], "method": method, "state": out["state"]}
    if out["values"] is not None:
        metrics.update({o.metric: v for o, v in zip(spec.objectives, out["values"])},
                       constraint_key=out["constraint"][0], constraint=out["constraint"][1])
    tune.report(metrics)


def main() -> None:
    global N_TRIALS
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    N_TRIALS = args.trials
    import ray
    from ray import tune

    from cluster import ray_private

    spec = quickstart(args.trials)
    with ray_private.loopback_only():
        ray.init(address="local", dashboard_host="127.0.0.1", configure_logging=False)
    search = ConstrainedOptunaSearch(space=space, sampler=sampler(spec, 0),
                                     metric=[o.metric for o in spec.objectives],
                                     mode=["min" if o.direction == "minimize" else "max"
                                           for o in spec.objectives])
    with tempfile.TemporaryDirectory() as tmp:
        tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": spec.resources.cpus_per_trial}),
                           tune_config=tune.TuneConfig(search_alg=search, num_samples=args.trials,
                                                       max_concurrent_trials=1),
                           run_config=tune.RunConfig(storage_path=tmp, name="peer", verbose=0))
        grid = tuner.fit()
        trials = [{"start": r.metrics.get("start"), "end": r.metrics.get("end"),
                   "method": r.metrics.get("method"), "state": r.metrics.get("state"),
                   "values": [r.metrics.get(o.metric) for o in spec.objectives]} for r in grid]
    ray.shutdown()
    write(args.out, "ray_tune", sorted(trials, key=lambda t: t["start"] or 0))


if __name__ == "__main__":
    main()
