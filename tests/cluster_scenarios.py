"""Node-level faults on a real cluster on this machine (tests/cluster_util.py), each a function that
builds its cluster, runs a sweep with a driver process (tests/drive.py: the real CLI, the trial a
fake of $FAKE_TASK_SECONDS), injects the fault, checks the record and returns its figures.
tests/test_cluster_nodes.py runs each once; bench/cluster_faults.py runs each N times for the
figures in docs/reliability.md.

What every scenario checks at the end (`check_record`): every configuration of an uninterrupted
sweep exactly once (same sampler, same seeds: the same set of configurations), every run COMPLETE,
nothing RUNNING or WAITING in the study, no lock left, every Parquet file whole and no temporary file
left behind."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from tests.cluster_util import LocalCluster, Node

DRIVE = [sys.executable, "-m", "tests.drive"]
TRIAL_S = 2.0  # one fake trial: long enough to be caught mid-trial
N_TRIALS = 9


def spec_dict(name: str = "nodes", n_trials: int = N_TRIALS, **over) -> dict:
    from tests.sweep_util import small_spec

    # the random sampler proposes configuration i from (seed, i) alone: the set of configurations
    # does not depend on which node finished first, so it can be compared with an uninterrupted run
    return small_spec(name=name, n_trials=n_trials, sampler={"name": "random", "seed": 5},
                      resources={"backend": "ray", "cpus_per_trial": 1, "max_retries": 3}, **over)


def write_spec(folder: Path, **over) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "spec.yaml"
    p.write_text(yaml.safe_dump(spec_dict(**over)))
    return p


def uninterrupted(tmp: Path, **over) -> set:
    """The configurations an uninterrupted sweep of the same spec runs (in-process, fake trials)."""
    from orchestrator.runner import run_sweep
    from sweeps.spec import load_spec
    from tests.sweep_util import fake_task

    raw = spec_dict(**over)
    raw["resources"] = {"backend": "inline"}
    run_sweep(load_spec(raw), tmp / "uninterrupted", fn=fake_task, log=None)
    return check_record(tmp / "uninterrupted", raw["n_trials"])


def check_record(run_dir: Path, n_trials: int) -> set:
    """The record invariants (module docstring); returns the set of (method, params) that ran."""
    from sweeps import results as R
    from tests.test_reliability import assert_whole

    scans = R.scan_record(run_dir)
    for sub, scan in scans.items():
        assert not scan.damaged, f"{sub}: {scan.problems()}"
        left = [p.name for p in (run_dir / sub).iterdir() if p.name.startswith(".")]
        assert not left, f"temporary files left in {sub}/: {left}"
    return assert_whole(run_dir, n_trials)


class Driver:
    """`python -m tests.drive ARGS` on a node; stderr read as it comes, each line with its time."""

    def __init__(self, cluster: LocalCluster, node: Node, args: list, **env: str):
        self.proc = cluster.popen(node, [*DRIVE, *map(str, args)], env=cluster.env(node, **env),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str]] = []
        self._out: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(self.proc.stderr, True), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stdout, False), daemon=True)]
        for t in self._threads:
            t.start()

    def _read(self, stream, err: bool) -> None:
        for line in stream:
            if err:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
            else:
                self._out.append(line)

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_line(self, pattern: str, timeout: float = 120) -> float:
        """When a stderr line matching `pattern` came (waits for it)."""
        deadline, rx = time.monotonic() + timeout, re.compile(pattern)
        while True:
            done = self.proc.poll() is not None and not self._threads[0].is_alive()
            for t, line in list(self.lines):
                if rx.search(line):
                    return t
            if done:
                raise AssertionError(f"the driver ended ({self.proc.returncode}) with no line "
                                     f"/{pattern}/: {self.stderr[-3000:]}")
            assert time.monotonic() < deadline, f"no line /{pattern}/ in: {self.stderr[-3000:]}"
            time.sleep(0.05)

    def finish(self, timeout: float = 300) -> int:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the driver did not end within {timeout} s: {self.stderr[-3000:]}") from None
        for t in self._threads:
            t.join(10)
        return self.proc.returncode


def running_on(node: Node, driver: Driver, timeout: float = 120) -> float:
    """Wait until a trial runs on `node` (tests.tasks.fake_run_task's mark); when it was seen."""
    deadline = time.monotonic() + timeout
    marks = node.dir / "running"
    while not (marks.is_dir() and any(marks.iterdir())):
        assert driver.proc.poll() is None, f"the driver ended: {driver.stderr[-3000:]}"
        assert time.monotonic() < deadline, f"no trial started on {node.name}: {driver.stderr[-3000:]}"
        time.sleep(0.05)
    return time.monotonic()


def n_landed(run_dir: Path) -> int:
    """Runs in the record's one-run files (not temporary files)."""
    from sweeps.results import _files

    return len(_files(run_dir / "trials"))


def landed(run_dir: Path, n: int, driver: Driver, timeout: float = 120) -> None:
    """Wait until `n` runs are in the record."""
    deadline = time.monotonic() + timeout
    while n_landed(run_dir) < n:
        assert driver.proc.poll() is None, f"the driver ended: {driver.stderr[-3000:]}"
        assert time.monotonic() < deadline, f"fewer than {n} runs landed: {driver.stderr[-3000:]}"
        time.sleep(0.05)


def _cluster(logs: Path, workers: int = 2, **kw) -> LocalCluster:
    return LocalCluster(workers=workers, logs=logs,
                        env={"FAKE_TASK_SECONDS": str(TRIAL_S), "FAKE_TASK_RUNNING": "~/running"}, **kw)


def _rows(run_dir: Path) -> list[dict]:
    from sweeps.results import read_results

    return read_results(run_dir).to_pylist()


def _on(rows: list[dict], node: Node) -> list[dict]:
    return [r for r in rows if str(r["node"]).startswith(f"{node.ip}/")]


def start_sweep(c: LocalCluster, node: Node, n: int = N_TRIALS, **env: str) -> tuple[Driver, Path]:
    """A driver on `node` running a sweep of `n` fake trials (spec and record in its folder)."""
    run = node.dir / "run"
    spec = write_spec(node.dir, n_trials=n)
    return Driver(c, node, ["run", spec, "--out", run, "--address", c.address], **env), run


def reran_elsewhere(run: Path, victim: Node, expected: set, n: int = N_TRIALS) -> int:
    """The record is whole and holds `expected`; the runs that had to run again (attempt > 0)
    ran off `victim`. Returns how many did."""
    assert check_record(run, n) == expected
    rows = _rows(run)
    reruns = [r for r in rows if r["attempt"] > 0]
    assert reruns and not _on(reruns, victim), [(r["attempt"], r["node"]) for r in rows]
    return len(reruns)


RETRY = r"seed \d+: .*; retry \d+/\d+"  # the driver resubmits a lost run
FINISHED = r"\] finished: "  # the last run landed (the report is written after)


# -- the scenarios ---------------------------------------------------------------------------------

def worker_killed(root: Path) -> dict:
    """A worker node killed mid-trial (SIGKILL to every process of it): its trial runs again on
    another node, nothing is lost or recorded twice, the sweep finishes (exit 0)."""
    expected = uninterrupted(root)
    with _cluster(root / "logs") as c:
        victim = c.workers[0]
        d, run = start_sweep(c, c.head)
        running_on(victim, d)
        t_kill = c.kill(victim)
        t_retry = d.wait_line(RETRY)
        t_done = d.wait_line(FINISHED)
        assert d.finish() == 0, d.stderr[-3000:]
        reruns = reran_elsewhere(run, victim, expected)
    return {"retry_after_kill_s": round(t_retry - t_kill, 2), "done_after_kill_s": round(t_done - t_kill, 2),
            "reruns": reruns}


def worker_joins(root: Path) -> dict:
    """A worker node started while the sweep runs is used: trials run on it."""
    expected = uninterrupted(root, n_trials=16)
    with _cluster(root / "logs", workers=1) as c:
        d, run = start_sweep(c, c.head, n=16)
        landed(run, 1, d)  # the sweep is under way
        new = c.add_node("w2")
        t_join = time.monotonic()
        c.start_ray(new)
        t_up = time.monotonic()
        t_used = running_on(new, d)
        assert d.finish() == 0, d.stderr[-3000:]
        assert check_record(run, 16) == expected
        on_new = _on(_rows(run), new)
        assert on_new, "no trial ran on the node that joined"
    return {"ray_start_s": round(t_up - t_join, 2), "first_trial_after_join_s": round(t_used - t_up, 2),
            "trials_on_new_node": len(on_new)}


def worker_cut_off(root: Path, down_s: float = 12.0) -> dict:
    """A worker node's link down for longer than Ray's health check: the node counts as lost, its
    trial runs again elsewhere; when the link comes back, nothing is recorded twice."""
    expected = uninterrupted(root)
    with _cluster(root / "logs") as c:
        victim = c.workers[0]
        d, run = start_sweep(c, c.head)
        running_on(victim, d)
        c.link(victim, up=False)
        t_cut = time.monotonic()
        t_retry = d.wait_line(RETRY)
        time.sleep(max(0.0, t_cut + down_s - time.monotonic()))
        c.link(victim, up=True)
        t_back = time.monotonic()
        assert d.finish() == 0, d.stderr[-3000:]
        reruns = reran_elsewhere(run, victim, expected)
        # the node came back to a cluster that had declared it dead: its raylet leaves
        deadline = time.monotonic() + 60
        while victim.ray.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        ray_left = victim.ray.poll() is not None
    return {"retry_after_cut_s": round(t_retry - t_cut, 2), "down_s": round(t_back - t_cut, 2),
            "reruns": reruns, "returned_node_left_cluster": ray_left}


def head_lost(root: Path, head_timeout_s: float = 5.0, n: int = 20) -> dict:
    """The head node killed under a driver on a worker node: the driver ends with one line naming
    the cause (exit 1, no traceback, the record whole); `resume` against a new cluster continues
    the same record to the uninterrupted sweep's configurations."""
    expected = uninterrupted(root, n_trials=n)
    with _cluster(root / "logs") as c:
        home = c.workers[0]  # a node of the cluster that is not the head: the driver survives it
        d, first = start_sweep(c, home, n=n, UNLEARN_SWEEP_RAY_HEAD_TIMEOUT=str(head_timeout_s))
        landed(first, 2, d)
        running_on(c.head, d)
        t_kill = c.kill(c.head)
        rc = d.finish(timeout=120)
        t_end = time.monotonic()
        err = d.stderr
        assert rc == 1, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        errors = [ln for ln in err.splitlines() if ln.startswith("unlearn-sweep:")]
        assert len(errors) == 1 and "the Ray cluster is gone" in errors[0], err[-3000:]
        run = root / "run"
        shutil.copytree(first, run)  # the record, carried to the new cluster
    landed_before = len(_rows(run))
    with _cluster(root / "logs2") as c2:
        moved = c2.head.dir / "run"
        shutil.move(str(run), moved)
        t0 = time.monotonic()
        r = Driver(c2, c2.head, ["resume", moved, "--address", c2.address])
        assert r.finish() == 0, r.stderr[-3000:]
        t_resume = time.monotonic() - t0
        assert check_record(moved, n) == expected
    return {"driver_exit_after_kill_s": round(t_end - t_kill, 2), "head_timeout_s": head_timeout_s,
            "rows_before_resume": landed_before, "resume_s": round(t_resume, 2), "line": errors[0]}


# -- SLURM -----------------------------------------------------------------------------------------

TEMPLATE = Path(__file__).resolve().parents[1] / "cluster" / "templates" / "slurm-ray.sh"
PREEMPTIONS = {  # how a test stops the job mid-sweep, and what that stands for
    "requeue": ["scontrol", "requeue"],  # preemption (PreemptMode=REQUEUE): SIGTERM to the job
    "time-limit": ["scancel", "--batch", "--signal=USR1"],  # --signal=B:USR1@120 before the limit
}


def slurm_sweep(root: Path, preempt: str | None = None, n: int = 12) -> dict:
    """The real template under SLURM (slurmctld + a slurmd on each of 2 nodes, tests/cluster_util.py):
    `sbatch` runs a sweep of fake trials to the end, the record complete. With `preempt`, the job is
    stopped mid-sweep (PREEMPTIONS): its driver stops gracefully, the job runs again (requeued)
    and continues the same record, ending with an uninterrupted sweep's configurations."""
    from tests.cluster_util import Slurm

    expected = uninterrupted(root, name="slurm", n_trials=n)
    with LocalCluster(workers=1, ray=False, logs=root / "logs",
                      env={"FAKE_TASK_SECONDS": str(TRIAL_S)}) as c:
        t0 = time.monotonic()
        s = Slurm(c, cpus=2)
        t_up = time.monotonic()
        spec, run = write_spec(c.head.dir, name="slurm", n_trials=n), c.head.dir / "run"
        job = s.sbatch(["--nodes=2", "--cpus-per-task=2", "--gpus-per-node=0", "--time=15",
                        TEMPLATE, spec, run], UNLEARN_SWEEP=f"{sys.executable} -m tests.drive")
        log = c.head.dir / f"unlearn-sweep-{job}.log"
        figures = {"slurm_up_s": round(t_up - t0, 2)}
        if preempt:
            deadline = time.monotonic() + 180
            while n_landed(run) < 3:
                assert s.job(job).get("JobState") in ("PENDING", "RUNNING"), (s.job(job), _text(log))
                assert time.monotonic() < deadline, _text(log)
                time.sleep(0.1)
            t_stop = time.monotonic()
            r = s.cmd([*PREEMPTIONS[preempt], str(job)])
            assert r.returncode == 0, r.stderr
            landed_before = n_landed(run)
            while "interrupted (SIGTERM)" not in _text(log):
                assert time.monotonic() < t_stop + 60, _text(log)[-3000:]
                time.sleep(0.1)
            t_stopped = time.monotonic()
            while "(restart 1)" not in _text(log):
                assert time.monotonic() < t_stop + 300, (s.job(job), _text(log)[-3000:])
                time.sleep(0.2)
            t_again = time.monotonic()
            info = s.wait_job(job, restarts=1)
            figures.update(driver_stopped_s=round(t_stopped - t_stop, 2),
                           running_again_s=round(t_again - t_stop, 2),
                           done_s=round(time.monotonic() - t_stop, 2), runs_landed_before_stop=landed_before)
        else:
            info = s.wait_job(job)
        figures["job_s"] = round(time.monotonic() - t_up, 2)
        text = _text(log)
        assert info["ExitCode"] == "0:0", (info, text)
        ours = _tracebacks_not_rays(text)
        assert not ours, ours[0][-3000:]
        assert check_record(run, n) == expected, text[-3000:]
        starts = text.count("unlearn-sweep: job ")
        if preempt:
            assert "interrupted (SIGTERM)" in text, text[-3000:]  # the first driver stopped by our path
            assert starts == 2, text[-3000:]
        else:
            assert starts == 1, text[-3000:]
    return figures


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else f"({path.name} not written)"


def _tracebacks_not_rays(text: str) -> list[str]:
    """The job log's tracebacks with a frame outside Ray. Ray's own node processes (`ray start
    --block` under srun) may log one when SLURM's SIGTERM reaches a worker node while the head's
    GCS is going down (`_drain_node_before_shutdown`: "RpcError: Cancelling all calls"): Ray's race
    at a requeue, seen once in 7 runs here, which neither the driver nor the template can prevent."""
    blocks = text.split("Traceback (most recent call last):")[1:]
    frames = [[ln for ln in b.splitlines() if ln.lstrip().startswith("File ")] for b in blocks]
    return [b for b, fs in zip(blocks, frames)
            if not fs or not all("/site-packages/ray/" in f or '"python/ray/' in f for f in fs)]
