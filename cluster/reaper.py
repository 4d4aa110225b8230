"""Ends an embedded Ray's processes once the driver that started them is gone, however it went
(SIGKILL included).

    reaper = Reaper.start(temp_root)     # right before ray.init(address="local")
    reaper.watch(session_dir)            # once ray.init returned
    ...
    reaper.stop()                        # after ray.shutdown(): stragglers ended, the reaper reaped

Why: the processes the driver starts itself (GCS, raylet, dashboard, monitors) die with it (Ray
sets PR_SET_PDEATHSIG), and the workers follow the raylet within about 2 s; but the raylet's two
agents (`ray::DashboardAgent`, `ray::RuntimeEnvAgent`), once they see the raylet gone, try to report
its death to the GCS, which is gone too, and wait out the report's 60 s timeout.

How: a separate small process (this file, run by path with `python -I`: the standard library only)
reads a pipe whose writing end only the driver holds. The pipe closes when the driver exits; the
reaper then sends SIGKILL to every process that has a file of the session directory open (Ray's
processes keep their logs there; a renamed agent's environment is no longer readable, its open
files are) and is named like Ray's (`ray::...`, `ray-dashboard-...`, raylet, gcs_server), so a
`tail -f` of a log is left alone. Nothing else on the machine is touched: the session directory
is this driver's own. A driver killed inside ray.init, before it could name its session directory,
is covered too: the reaper, started before ray.init, then looks for the session directories under
Ray's temp root that carry the driver's pid in their name (Ray names them so).
"""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys

RAY_NAMES = ("ray::", "ray-dashboard", "raylet", "gcs_server")


class Reaper:
    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    @classmethod
    def start(cls, temp_root: str) -> "Reaper":
        """Before ray.init: a reaper for the Ray this process is about to start under `temp_root`."""
        proc = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__), temp_root, str(os.getpid())],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        return cls(proc)

    def watch(self, session_dir: str) -> None:
        """After ray.init: the session directory it made (the reaper no longer has to look for it)."""
        assert self.proc.stdin is not None  # started with stdin=PIPE
        try:
            self.proc.stdin.write(session_dir.encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:  # the reaper is gone: nothing to tell
            pass

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close the pipe (as the driver's death would), let the reaper end what is left, reap it."""
        assert self.proc.stdin is not None  # started with stdin=PIPE
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def session_processes(session_dir: str) -> list[int]:
    """Processes named like Ray's that hold a file under `session_dir` open (this one excluded)."""
    prefix = session_dir.rstrip("/") + "/"
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/comm") as f:
                if not f.read().startswith(RAY_NAMES):
                    continue
            fds = f"/proc/{name}/fd"
            if any(os.readlink(f"{fds}/{fd}").startswith(prefix) for fd in os.listdir(fds)):
                found.append(int(name))
        except OSError:  # gone meanwhile, or not ours to look at
            continue
    return found


def main(temp_root: str, driver_pid: int) -> None:
    for s in (signal.SIGINT, signal.SIGHUP):  # a terminal's Ctrl-C or hang-up is the driver's to handle
        signal.signal(s, signal.SIG_IGN)
    said = b""
    while chunk := sys.stdin.buffer.read(1):  # b"" once the driver's end is closed
        said += chunk
    named = said.decode(errors="replace").splitlines()[:1]
    # killed inside ray.init: the session directories Ray named after the driver's pid
    sessions = named or glob.glob(os.path.join(glob.escape(temp_root), f"session_*_{driver_pid}"))
    for session_dir in sessions:
        for pid in session_processes(session_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
