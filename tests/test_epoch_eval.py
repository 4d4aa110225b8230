"""`eval.eval_every`: UA, RA, TA recorded per epoch by the loop's callback, without changing what
the trial trains."""
from __future__ import annotations

import pytest

from tests.conftest import digits_config
from unlearning.trial import run_trial


def test_eval_every_records_ua_ra_ta_per_epoch_and_changes_nothing_else():
    plain = run_trial(digits_config("ft", params={"epochs": 3}))
    seen = []
    every = run_trial(digits_config("ft", params={"epochs": 3}, eval={"eval_every": 2}), on_epoch=seen.append)
    assert plain.state == every.state == "COMPLETE"
    for m in ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy"):
        assert every.metrics[m] == pytest.approx(plain.metrics[m], abs=1e-9), m
    assert [h["loss"] for h in every.history] == pytest.approx([h["loss"] for h in plain.history])
    # every 2nd epoch (epoch 1) and the last (epoch 2); the progress callback sees the same rows
    assert ["unlearn_acc" in h for h in every.history] == [False, True, True]
    assert seen == every.history and not any("unlearn_acc" in h for h in plain.history)
    last = every.history[-1]
    for m in ("unlearn_acc", "retain_acc", "test_acc"):
        assert last[m] == pytest.approx(every.metrics[m])
    assert "mia_efficacy" not in last  # cheap: no MIA per epoch
