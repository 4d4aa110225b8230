"""Tiny task functions for backend tests, importable by Ray workers (`tests.tasks.task`).

A payload names what to do: {"op": "echo" | "sleep" | "raise" | "die" | "epochs" | "pid" | "tail", ...}."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path


def task(payload: dict, on_epoch=None) -> dict:
    op = payload.get("op", "echo")
    if op == "echo":
        return {"echo": payload.get("value"), "pid": os.getpid()}
    if op == "sleep":
        t0 = time.time()
        time.sleep(float(payload.get("seconds", 0.5)))
        return {"start": t0, "end": time.time(), "pid": os.getpid(), "host": socket.gethostname(),
                "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "key": payload.get("key")}
    if op == "raise":
        raise ValueError(payload.get("message", "boom"))
    if op == "die":
        os._exit(int(payload.get("code", 1)))
    if op == "epochs":
        for epoch in range(int(payload.get("n", 3))):
            if on_epoch is not None:
                on_epoch({"epoch": epoch, "loss": 1.0 / (epoch + 1)})
            time.sleep(float(payload.get("seconds", 0.0)))
        return {"epochs": int(payload.get("n", 3))}
    if op == "pid":
        return {"pid": os.getpid()}
    if op == "shared":  # bytes handed over with Backend.share, fetched here
        import hashlib

        return {"sha": hashlib.sha256(payload["blob"]()).hexdigest()}
    if op == "env":
        return {k: os.environ.get(k) for k in payload.get("names", [])}
    if op == "tail":  # `device_s` of work, then a CPU tail (cluster/backend.py) of `tail_s`
        t0 = time.time()
        if payload.get("mark"):  # a file that says this task's device part has begun
            Path(payload["mark"]).touch()
        time.sleep(float(payload.get("device_s", 0.0)))
        device = [t0, time.time()]

        def tail() -> dict:
            t1 = time.time()
            until = payload.get("tail_until")  # end the tail early once this file exists
            end = t1 + float(payload.get("tail_s", 0.0))
            while time.time() < end and not (until and Path(until).exists()):
                time.sleep(0.02)
            if payload.get("raise"):
                raise ValueError(payload["raise"])
            return {"tail": payload.get("value"), "pid": os.getpid(), "device": device,
                    "in_tail": [t1, time.time()]}

        return tail
    if op == "oom":  # what unlearning.tasks returns when CUDA runs out of memory
        return {"state": "FAIL", "failure": {"kind": "out_of_memory", "message": "out of memory: CUDA"},
                "retire_worker": True, "pid": os.getpid()}
    raise KeyError(f"unknown op {op!r}")


def slow_fake_task(payload: dict, on_epoch=None) -> dict:
    """tests.sweep_util.fake_task after a pause: long enough for a node to be removed under it."""
    from tests.sweep_util import fake_task

    time.sleep(1.5)
    return fake_task(payload, on_epoch)


def fake_run_task(payload: dict, on_epoch=None) -> dict:
    """unlearning.tasks.run_task's stand-in for driver processes under test (tests/drive.py): the
    probe passes, a trial is tests.sweep_util.fake_task after $FAKE_TASK_SECONDS (default 0.2).
    With $FAKE_TASK_RUNNING (a folder; `~` is the node's HOME) a file named after the process is
    there while a trial runs: how a cluster test knows a node is mid-trial."""
    from tests.sweep_util import fake_task

    if payload.get("task") in ("probe", "oracle"):  # nothing to check, no model to train
        signal_driver(payload["task"])
        return {"ok": True, "files": {}}
    signal_driver("trial")
    mark = None
    if os.environ.get("FAKE_TASK_RUNNING"):
        mark = Path(os.path.expanduser(os.environ["FAKE_TASK_RUNNING"])) / str(os.getpid())
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
    try:
        time.sleep(float(os.environ.get("FAKE_TASK_SECONDS", "0.2")))
        return fake_task(payload, on_epoch)
    finally:
        if mark is not None:
            mark.unlink(missing_ok=True)


def signal_driver(moment: str) -> None:
    """Send the driver under test ($DRIVE_PID, set by tests/drive.py) the signal $SIGNAL_AT names
    (MOMENT[:SIGNAL], default SIGTERM), once ($SIGNAL_DIR/sent marks it), if `moment` is its moment.
    Runs in the driver or in a Ray worker."""
    import signal

    at, _, name = os.environ.get("SIGNAL_AT", "").partition(":")
    if at != moment:
        return
    try:
        os.close(os.open(Path(os.environ["SIGNAL_DIR"]) / "sent", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(int(os.environ["DRIVE_PID"]), getattr(signal, name or "SIGTERM"))


def fake_tail_task(payload: dict, on_epoch=None):
    """tests.sweep_util.fake_task with a device part (0.2 s) and a CPU tail (0.3 s), as
    unlearning.tasks.run_task returns a trial. The first tail to run in the sweep (marked by a file
    in the payload's cache_dir) hangs for a minute, for timeouts."""
    from pathlib import Path

    from tests.sweep_util import fake_task

    time.sleep(0.2)
    result = fake_task(payload, on_epoch)

    def tail() -> dict:
        try:
            (Path(payload["cache_dir"]) / "hung").touch(exist_ok=False)
            time.sleep(60)
        except FileExistsError:
            time.sleep(0.3)
        return result

    return tail
