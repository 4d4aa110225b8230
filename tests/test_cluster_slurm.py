"""SLURM for real: slurmctld and a slurmd on each of two nodes (network namespaces, the harness of
tests/cluster_util.py), the real cluster/templates/slurm-ray.sh submitted with `sbatch`: a Ray head
and a worker started by srun, readiness checked with `ray status`, the sweep driver on the head.
The scenarios are in tests/cluster_scenarios.py (bench/cluster_faults.py repeats them).

Marked `cluster` (make test-cluster, CI): 1-2 minutes each. Skipped without root or without
Debian's slurm-wlm (`.ci/run` installs it where it can)."""
from __future__ import annotations

import pytest

from tests import cluster_scenarios as S
from tests.cluster_util import slurm_unavailable

WHY = slurm_unavailable()
pytestmark = [pytest.mark.cluster, pytest.mark.ray, pytest.mark.skipif(WHY is not None, reason=WHY or "")]


def test_the_template_runs_a_sweep_to_the_end_under_slurm(tmp_path):
    print(S.slurm_sweep(tmp_path))


def test_a_requeued_job_stops_gracefully_and_continues_the_same_record(tmp_path):
    """`scontrol requeue` (what preemption with PreemptMode=REQUEUE does): SIGTERM to every process
    of the job, the driver's graceful stop, the job back in the queue, the sweep continued."""
    print(S.slurm_sweep(tmp_path, preempt="requeue"))


def test_the_time_limit_signal_stops_the_driver_and_the_job_requeues_itself(tmp_path):
    """USR1 to the batch script (what `--signal=B:USR1@120` sends before the time limit)."""
    print(S.slurm_sweep(tmp_path, preempt="time-limit"))
