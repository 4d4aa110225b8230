"""The Ray backend: trials on long-lived actors, across GPUs and nodes.

    backend = RayBackend(fn, progress, address=None, cpus_per_trial=1, gpus_per_trial=0.25,
                         overlap=True)

Where Ray runs
    address None (and no RAY_ADDRESS): an embedded Ray started here, dashboard on 127.0.0.1 only,
    token authentication left as Ray sets it (on by default since 2.5x). "auto", "host:port",
    "ray://host:port" or RAY_ADDRESS: an existing cluster. If this process already called
    ray.init, that instance is used and left running at shutdown. Either way ray.init leaves the
    process's signal handlers as they are (the driver's stop path stays live while Ray starts), and
    an embedded Ray's processes end with the driver, even one killed with SIGKILL (cluster/reaper.py).

Trial actors
    A pool of actors, one per trial slot: as many as the cluster's live nodes can hold at
    `cpus_per_trial` CPUs and `gpus_per_trial` GPUs each (0.25 packs four on a GPU), capped by
    `max_concurrent`. The pool grows when nodes join (checked about once a second, `_check_nodes`,
    from `submit`, `wait` and `capacity`): a node added mid-sweep takes trials. It does not shrink
    when nodes go: the replacements of a lost node's actors wait for room. Each actor is one
    worker process that calls `fn` trial after trial, so what the task function caches per process
    (data on the device, original/Retrain models) is reused.
    A request that no node can meet is rejected before anything starts (ClusterConfigError, one
    line), instead of a sweep that waits forever.

Overlap (`overlap=True`)
    A task runs in two actor calls: `start` runs `fn` (the part that needs the device) and sets the
    CPU tail `fn` may return (cluster/backend.py; a trial's MIA SVC) going on the actor's background
    thread; `finish` returns the result once the tail is done. While a task is in its tail, its actor
    takes the next task, so one trial's SVC runs beside the next one's training: an actor holds at
    most two tasks, at most one of them before its tail, and `capacity()` counts the task an actor
    can take now. Without overlap an actor holds one task at a time.

Progress
    `fn` gets an `on_epoch(row)` that pushes the row to a small inbox actor on the driver's node;
    `wait` drains it and calls `progress(key, row)` here, while the trial runs.

Faults
    The actor's process killed, its node lost, Ray's memory monitor: Outcome(lost=why,
    retryable=True), and the actor is replaced by a fresh one (which waits for resources if its node
    is gone: `capacity()` counts ready actors only). The task function raising: Outcome(lost=...,
    retryable=False); the actor stays. `cancel` kills the actor (ray.kill) and replaces it; another
    task on that actor (overlap) is lost with it: Outcome(lost=..., retryable=True), so the driver
    runs it again. The cluster itself lost (its head's GCS no longer accepts connections for
    UNLEARN_SWEEP_RAY_HEAD_TIMEOUT seconds, by default half of the 60 s after which Ray ends a
    driver that lost its GCS, RAY_gcs_rpc_server_reconnect_timeout_s): `submit`, `wait` and
    `capacity` raise BackendLost (one line), and `shutdown` disconnects from what is left. A result
    with `retire_worker` (cluster/backend.py) retires its actor: it takes no new task and is replaced
    by a fresh process once its tasks are done (fragmented CUDA caches).

Shared files
    `share(blob)` puts bytes in Ray's object store once and returns a small callable that, called
    in a worker on any node, fetches them (the object travels to a node the first time one of its
    workers asks). The driver uses it to hand the oracles the oracle phase trained to every node:
    each node keeps its own content-addressed cache ($UNLEARN_SWEEP_CACHE as set on that node, else
    ~/.cache/unlearn-sweep), no shared file system needed.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

try:
    import ray
    from ray import exceptions as rex
except ImportError as e:  # pragma: no cover - ray is a dependency, but keep the message clear
    raise ImportError("the Ray backend needs ray: pip install 'ray[default]'") from e

from cluster import ray_private
from cluster.backend import WORKER_SECRETS, BackendLost, Handle, Outcome, ProgressFn, TaskFn
from cluster.reaper import Reaper

log = logging.getLogger(__name__)

_POLL_S = 0.2  # how often `wait` drains progress while nothing has finished
_NODE_CHECK_S = 1.0  # how often idle actors are checked against the live node list
_START_TIMEOUT_S = float(os.environ.get("UNLEARN_SWEEP_RAY_START_TIMEOUT", "120"))
_START_GRACE_S = 10.0  # once one worker is up, how long the others may take before the sweep starts


def _head_timeout_s() -> float:
    """How long the GCS may refuse connections before the cluster counts as lost: below the time
    after which Ray itself ends the driver process (no clean line then)."""
    ray_gives_up = float(os.environ.get("RAY_gcs_rpc_server_reconnect_timeout_s", "60"))
    mine = os.environ.get("UNLEARN_SWEEP_RAY_HEAD_TIMEOUT")
    return min(float(mine), 0.8 * ray_gives_up) if mine else 0.5 * ray_gives_up


class ClusterConfigError(ValueError):
    """The cluster cannot run this sweep as asked (resources, address). Message: one line."""


# -- the remote side -----------------------------------------------------------------------------

class _Inbox:
    """Per-epoch rows from the actors, held until the driver drains them (one call per poll)."""

    def __init__(self):
        self.rows: list[tuple[str, int, dict]] = []

    def put(self, key: str, attempt: int, row: dict) -> None:
        self.rows.append((key, attempt, row))

    @ray.method  # a no-op at run time; types `.remote()` for the type checker
    def drain(self) -> list[tuple[str, int, dict]]:
        rows, self.rows = self.rows, []
        return rows


class _TrialWorker:
    """One trial slot: a process that runs the task function, trial after trial. A task is two calls:
    `start` runs the task function and hands a CPU tail it returns to this process's background
    thread; `finish` returns the result once that is done. Between the two, the device is free."""

    def __init__(self, fn: TaskFn, inbox):
        self.fn, self.inbox = fn, inbox
        self._tails = ThreadPoolExecutor(max_workers=1, thread_name_prefix="task-tail")
        self._pending: dict[tuple[str, int], Future] = {}

    @ray.method  # as _Inbox.drain
    def where(self) -> dict[str, Any]:
        ctx = ray.get_runtime_context()
        return {"ip": ray.util.get_node_ip_address(), "node_id": ctx.get_node_id(), "pid": os.getpid(),
                "gpus": ctx.get_accelerator_ids().get("GPU", [])}

    def start(self, key: str, attempt: int, payload: dict[str, Any]) -> None:
        def on_epoch(row: dict) -> None:
            try:  # blocking put: every row is in the inbox before the result is
                ray.get(self.inbox.put.remote(key, attempt, row), timeout=30)
            except Exception:  # progress is a view; never fail a trial over it
                pass

        out = self.fn(payload, on_epoch=on_epoch)
        if callable(out):
            self._pending[(key, attempt)] = self._tails.submit(out)
        else:
            self._pending[(key, attempt)] = done = Future[dict[str, Any]]()
            done.set_result(out)

    def finish(self, key: str, attempt: int) -> dict[str, Any]:
        return self._pending.pop((key, attempt)).result()  # the tail's exception is the task's


# -- the driver side -----------------------------------------------------------------------------

@dataclass
class _Slot:
    actor: Any
    ready_ref: Any  # resolves once the actor process is up (to `where()`)
    ready: bool = False
    node: str = ""
    node_id: str = ""
    pid: int = 0
    tasks: list["_Task"] = field(default_factory=list)  # dispatched here and not collected yet
    retiring: bool = False  # takes no new task; replaced once its tasks are done


@dataclass
class _Task:
    handle: Handle
    payload: dict[str, Any]
    slot: _Slot | None = None
    ref: Any = None  # `start`'s, then (in_tail) `finish`'s
    in_tail: bool = False  # `start` returned: the device part is done
    node: str = ""
    started: float = field(default_factory=time.time)


class Shared:
    """A handle on bytes in Ray's object store: calling it (in any worker) returns them."""

    def __init__(self, ref):
        self.ref = ref

    def __call__(self) -> bytes:
        return ray.get(self.ref)


def node_label(ip: str, node_id: str) -> str:
    """How a node is named in outcomes and progress: its IP plus a short id (several Ray nodes may
    share one machine and so one IP)."""
    return f"{ip}/{node_id[:8]}"


def _fit(resources: dict[str, float], need: dict[str, float]) -> int:
    """How many trials needing `need` one node with `resources` holds."""
    n = min((math.floor(resources.get(k, 0.0) / v + 1e-9) for k, v in need.items() if v > 0),
            default=0)
    return max(n, 0)


def _fmt(x: float) -> str:
    return f"{x:g}"


class RayBackend:
    """Backend protocol on Ray (see the module docstring)."""

    def __init__(self, fn: TaskFn, progress: ProgressFn | None = None, *, address: str | None = None,
                 cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0,
                 max_concurrent: int | None = None, env_vars: dict[str, str] | None = None,
                 num_cpus: int | None = None, num_gpus: int | None = None,
                 include_dashboard: bool | None = None, check_resources: bool = True,
                 resources_per_trial: dict[str, float] | None = None, overlap: bool = False):
        if not cpus_per_trial > 0:
            raise ClusterConfigError(f"cpus_per_trial must be > 0, got {cpus_per_trial}")
        if gpus_per_trial < 0 or (gpus_per_trial > 1 and gpus_per_trial != int(gpus_per_trial)):
            raise ClusterConfigError(
                f"gpus_per_trial must be a fraction up to 1 or a whole number, got {gpus_per_trial}")
        if max_concurrent is not None and max_concurrent < 1:
            raise ClusterConfigError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self.fn, self.progress = fn, progress
        self.per_slot = 2 if overlap else 1  # tasks an actor holds: one on the device, one in its tail
        self.cpus, self.gpus = float(cpus_per_trial), float(gpus_per_trial)
        self.custom = {k: float(v) for k, v in (resources_per_trial or {}).items()}
        self.need = {"CPU": self.cpus, "GPU": self.gpus, **self.custom}
        self._tasks: dict[Handle, _Task] = {}
        self._queued: deque[_Task] = deque()
        self._done: dict[Handle, Outcome] = {}
        self._slots: list[_Slot] = []
        self._shared: list[Any] = []
        self._closed = False
        self._last_node_check = 0.0
        self._max_concurrent = max_concurrent
        self._nodes_seen: frozenset[str] = frozenset()  # the live node ids the pool was sized for
        self._gcs_down_since: float | None = None
        self._last_probe = 0.0
        self._lost: str | None = None  # why the cluster counts as gone (BackendLost)
        self._spawn_failures = 0
        self._context: object | None = None  # what ray.init returned, when this backend called it
        self._reaper: Reaper | None = None  # ends an embedded Ray's processes if this driver dies
        self._started_ray = self._connect(address, num_cpus, num_gpus, include_dashboard)
        try:
            size = self._pool_size(max_concurrent, check_resources)
            env = dict(env_vars or {})  # nodes otherwise keep their own environment (and cache)
            self._actor_options: dict[str, Any] = {
                "num_cpus": self.cpus, "num_gpus": self.gpus, "max_restarts": 0,
                "max_concurrency": self.per_slot}
            if self.custom:
                self._actor_options["resources"] = dict(self.custom)
            if env:
                self._actor_options["runtime_env"] = {"env_vars": {k: str(v) for k, v in env.items()}}
            here = ray.get_runtime_context().get_node_id()
            self._inbox = ray.remote(_Inbox).options(
                num_cpus=0, max_restarts=-1, scheduling_strategy=ray.util.scheduling_strategies
                .NodeAffinitySchedulingStrategy(node_id=here, soft=True)).remote()
            self._worker_cls = ray.remote(_TrialWorker)
            for _ in range(size):
                self._slots.append(self._spawn())
            self._await_start(size)
        except BaseException:
            self.shutdown()
            raise

    # -- set-up ----------------------------------------------------------------------------------

    def _connect(self, address, num_cpus, num_gpus, include_dashboard) -> bool:
        """Connect or start Ray; True when this backend called ray.init (and so shuts it down)."""
        if ray.is_initialized():
            return False
        address = address or os.environ.get("RAY_ADDRESS") or None
        try:
            if address is None:  # embedded: never attach to some other process's local cluster
                if include_dashboard is None:
                    include_dashboard = os.environ.get("UNLEARN_SWEEP_RAY_DASHBOARD", "1") != "0"
                # token auth stays on (Ray's default); its notice saying so is not the user's business
                logging.getLogger(ray_private.TOKEN_SETUP_LOGGER).setLevel(logging.ERROR)
                # the reaper first: a driver killed inside ray.init leaves no Ray behind either
                self._reaper = Reaper.start(ray_private.temp_root())
                with ray_private.loopback_only(), _without_secrets(), _workers_at_our_priority(), \
                        ray_private.keep_signal_handlers():
                    self._context = ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus,
                                             include_dashboard=include_dashboard,
                                             dashboard_host="127.0.0.1", log_to_driver=True,
                                             configure_logging=False)
                self._reaper.watch(ray_private.session_dir())
            else:
                if num_cpus is not None or num_gpus is not None:
                    raise ClusterConfigError("num_cpus/num_gpus only apply to an embedded Ray "
                                             f"(address is {address!r})")
                _check_reachable(address)
                _token_mode_if_token()
                with _stderr_kept_on_success(), ray_private.keep_signal_handlers():  # not Ray's retry lines
                    self._context = ray.init(address=address, log_to_driver=True,
                                             configure_logging=False)
        except ClusterConfigError:
            raise
        except (ConnectionError, ValueError, RuntimeError, rex.RayError) as e:
            where = "start a local Ray instance" if address is None else f"connect to Ray at {address!r}"
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            if "token" in str(e).lower() or "auth" in type(e).__name__.lower():
                first = ("the cluster wants its authentication token: on the head run `ray get-auth-token`"
                         " and set RAY_AUTH_TOKEN (or ~/.ray/auth_token) here, with RAY_AUTH_MODE=token")
            raise ClusterConfigError(f"cannot {where}: {first}") from None
        return True

    def _alive_nodes(self) -> list[dict]:
        return [n for n in ray.nodes() if n.get("Alive")]

    def _pool_size(self, max_concurrent: int | None, check: bool) -> int:
        nodes = self._alive_nodes()
        self._nodes_seen = frozenset(n["NodeID"] for n in nodes)
        total = self._fit_total(nodes)
        if total == 0:
            want = " and ".join(f"{_fmt(v)} {k}" for k, v in self.need.items() if v > 0)
            best = max(nodes, key=lambda n: tuple(n["Resources"].get(k, 0) for k in
                                                  ("GPU", "CPU", *self.custom)), default=None)
            has = ("there are no live nodes" if best is None else
                   f"the largest of {len(nodes)} node(s) has " + ", ".join(
                       f"{_fmt(best['Resources'].get(k, 0))} {k}" for k, v in self.need.items() if v > 0))
            if check:
                raise ClusterConfigError(f"no Ray node can run a trial needing {want}: {has}")
            total = 1  # an autoscaling cluster may add a node that fits; one actor waits for it
        return min(total, max_concurrent) if max_concurrent else total

    def _fit_total(self, nodes: list[dict]) -> int:
        return sum(_fit(n.get("Resources", {}), self.need) for n in nodes)

    def _spawn(self) -> _Slot:
        actor = self._worker_cls.options(**self._actor_options).remote(self.fn, self._inbox)
        return _Slot(actor, actor.where.remote())

    def _await_start(self, size: int) -> None:
        """Block until every actor is up, or until the first is up and the rest have had as long
        again (at least _START_GRACE_S): an actor that cannot be placed yet (its node busy, or dead
        and not yet known so) joins the pool when it starts instead of holding the sweep back; fail
        clearly if none starts within the start timeout."""
        t0 = time.monotonic()
        deadline, first_up = t0 + _START_TIMEOUT_S, False
        while time.monotonic() < deadline:
            self._reap_starting(block_s=_POLL_S)
            if all(s.ready for s in self._slots):
                return
            if not first_up and any(s.ready for s in self._slots):
                first_up, now = True, time.monotonic()
                deadline = min(deadline, now + max(_START_GRACE_S, now - t0))
            if self._spawn_failures >= 2 * size and not any(s.ready for s in self._slots):
                raise ClusterConfigError(f"trial workers fail to start: {self._last_spawn_error}")
        if not any(s.ready for s in self._slots):
            raise ClusterConfigError(f"no trial worker started within {_START_TIMEOUT_S:.0f} s "
                                     "(are the cluster's resources taken by other jobs?)")
        log.warning("%d of %d trial workers still waiting for resources",
                    sum(not s.ready for s in self._slots), len(self._slots))

    _last_spawn_error = ""

    def _reap_starting(self, block_s: float = 0.0) -> None:
        starting = {s.ready_ref: s for s in self._slots if not s.ready}
        if not starting:
            return
        done, _ = ray.wait(list(starting), num_returns=len(starting), timeout=block_s)
        for ref in done:
            slot = starting[ref]
            try:
                info = ray.get(ref)
            except Exception as e:  # could not start (its node died, the fn cannot be loaded there)
                self._last_spawn_error = _reason(e)
                self._spawn_failures += 1
                self._replace(slot, kill=True)
                continue
            slot.ready, slot.pid, slot.node_id = True, info["pid"], info["node_id"]
            slot.node = node_label(info["ip"], info["node_id"])
            self._spawn_failures = 0

    def _replace(self, slot: _Slot, kill: bool = True) -> None:
        if slot not in self._slots or self._lost:  # done already (another of its tasks saw it
            return  # die), or nothing can start any more
        if kill:
            self._kill(slot.actor)
        self._slots.remove(slot)
        if not self._closed and self._spawn_failures < 20:
            self._slots.append(self._spawn())

    def _check_nodes(self) -> None:
        """About once a second: is the cluster still there (BackendLost if not), did nodes die
        (their idle or starting actors are replaced now rather than failing a trial later), did
        nodes join (the pool grows to what the live nodes hold, capped by max_concurrent)?"""
        if self._lost:
            raise BackendLost(self._lost)
        now = time.monotonic()
        if now - self._last_node_check < _NODE_CHECK_S:
            return
        self._last_node_check = now
        if not self._gcs_ok():
            if self._lost:
                raise BackendLost(self._lost)
            return
        try:
            nodes = self._alive_nodes()
        except Exception:
            return
        alive = frozenset(n["NodeID"] for n in nodes)
        for slot in list(self._slots):
            if slot.ready and not slot.tasks and slot.node_id not in alive:
                self._replace(slot)
        if alive == self._nodes_seen:
            return
        self._nodes_seen = alive
        want = self._fit_total(nodes)
        if self._max_concurrent:
            want = min(want, self._max_concurrent)
        grow = want - len(self._slots)
        if grow > 0 and not self._closed and self._spawn_failures < 20:
            log.info("%d node(s) alive: %d more trial worker(s)", len(alive), grow)
            self._slots.extend(self._spawn() for _ in range(grow))

    def _gcs_ok(self, fresh: bool = False) -> bool:
        """Whether the GCS (the head) accepts a TCP connection, asked at most once per
        _NODE_CHECK_S unless `fresh`. While it does not, nothing here calls it: ray.nodes() and
        ray.kill() would block until Ray gives up on the GCS and ends this process. Refused or
        unanswered for the head timeout: the cluster is lost (`_lost` says why)."""
        now = time.monotonic()
        if self._lost or (not fresh and now - self._last_probe < _NODE_CHECK_S):
            return not self._lost and self._gcs_down_since is None
        self._last_probe = now
        host, _, port = (ray.get_runtime_context().gcs_address or "").rpartition(":")
        if not port.isdigit():
            return True
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                pass
        except OSError as e:
            self._gcs_down_since = self._gcs_down_since or now
            if now - self._gcs_down_since >= _head_timeout_s() or self._closed:
                self._lost = (f"the Ray cluster is gone: its head (GCS at {host}:{port}) has not "
                              f"answered for {now - self._gcs_down_since:.0f} s "
                              f"({e.strerror or type(e).__name__})")
            return False
        self._gcs_down_since = None
        return True

    def _kill(self, actor, check: bool = True) -> None:
        """ray.kill, unless the GCS does not answer (`check`: asked now): it would block. Ray ends
        the actors of a driver that goes, and a lost cluster's are gone with it."""
        if not check or self._gcs_ok(fresh=True):
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass

    # -- the protocol ----------------------------------------------------------------------------

    def capacity(self) -> int:
        """How many tasks can run at once now: on each live actor (started and not known dead), its
        tasks plus the one it can take now (none while a task of it is before its tail)."""
        if self._closed:
            return 0
        self._check_nodes()
        self._reap_starting()
        return sum(len(s.tasks) + self._takes(s) for s in self._slots if s.ready)

    def _takes(self, slot: _Slot) -> bool:
        """Whether `slot` can start a task now: its device is free and it holds fewer than per_slot."""
        return (slot.ready and not slot.retiring and len(slot.tasks) < self.per_slot
                and all(t.in_tail for t in slot.tasks))

    def submit(self, key: str, payload: dict[str, Any], attempt: int = 0) -> Handle:
        if self._closed:
            raise RuntimeError("RayBackend is shut down")
        if self._lost:
            raise BackendLost(self._lost)
        h = Handle(key, attempt)
        task = _Task(h, payload)
        self._tasks[h] = task
        self._queued.append(task)
        self._dispatch()
        return h

    def _dispatch(self) -> None:
        self._reap_starting()
        self._check_nodes()
        for slot in sorted(self._slots, key=lambda s: len(s.tasks)):  # idle actors first
            if not self._queued:
                return
            if self._takes(slot):
                task = self._queued.popleft()
                slot.tasks.append(task)
                task.slot, task.node, task.started = slot, slot.node, time.time()
                task.ref = slot.actor.start.remote(task.handle.key, task.handle.attempt, task.payload)

    def wait(self, handles: list[Handle], timeout: float | None = None) -> list[Outcome]:
        """As the protocol says; with overlap it also returns (maybe with nothing) as soon as a task
        reaches its tail, so the caller can submit the task its actor can now take."""
        deadline = None if timeout is None else time.monotonic() + timeout
        wanted = [h for h in handles if h in self._tasks or h in self._done]
        if not wanted:
            return []
        while True:
            self._dispatch()
            out = [self._done.pop(h) for h in wanted if h in self._done]
            refs = {self._tasks[h].ref: self._tasks[h] for h in wanted
                    if h in self._tasks and self._tasks[h].ref is not None}
            if out:
                ready = ray.wait(list(refs), num_returns=len(refs), timeout=0)[0] if refs else []
            elif refs:
                left = _POLL_S if deadline is None else max(0.0, min(_POLL_S, deadline - time.monotonic()))
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=left)
                if ready:  # collect everything else that is done too
                    ready = ray.wait(list(refs), num_returns=len(refs), timeout=0)[0]
            else:
                ready = []  # everything queued here, waiting for an actor to start
                time.sleep(_POLL_S if deadline is None else
                           max(0.0, min(_POLL_S, deadline - time.monotonic())))
            self._drain_progress()  # after the results: every row of a finished trial is in the inbox
            tails = 0
            for r in ready:
                task = refs[r]
                if task.in_tail:
                    out.append(self._collect(task))
                elif (o := self._to_tail(task)) is not None:
                    out.append(o)
                else:
                    tails += 1
            if out or (tails and self.per_slot > 1) or (
                    deadline is not None and time.monotonic() >= deadline):
                return out

    def _to_tail(self, task: _Task) -> Outcome | None:
        """`start` has returned: ask for the result (`finish`) and free the actor's device, or give
        the Outcome of a start that failed."""
        try:
            ray.get(task.ref)
        except Exception as e:  # noqa: BLE001
            return self._finished(task, e)
        task.in_tail = True
        assert task.slot is not None  # a task with a ref is dispatched
        task.ref = task.slot.actor.finish.remote(task.handle.key, task.handle.attempt)
        return None

    def _collect(self, task: _Task) -> Outcome:
        try:
            result = ray.get(task.ref)
        except Exception as e:  # noqa: BLE001
            return self._finished(task, e)
        return self._finished(task, result=result)

    def _finished(self, task: _Task, error: BaseException | None = None,
                  result: dict[str, Any] | None = None) -> Outcome:
        """Forget a task and say how it ended: its result, or why there is none."""
        h, slot = task.handle, task.slot
        assert slot is not None  # a task with a ref is dispatched
        del self._tasks[h]
        slot.tasks.remove(task)
        dead = isinstance(error, rex.RayError) and not isinstance(error, rex.RayTaskError)
        if dead:  # the worker or its node is gone (died, lost, OOM kill): its other task is too
            assert error is not None  # dead: a RayError
            o = Outcome(h, lost=_reason(error), retryable=True, node=task.node)
        elif error is not None:  # the task function raised (its own bug: the worker is fine), or
            # the result cannot be read back here (deserialization)
            cause = getattr(error, "cause", None) or error
            o = Outcome(h, lost=f"{type(cause).__name__}: {_first_line(cause)}", retryable=False,
                        node=task.node)
        else:
            if isinstance(result, dict) and result.get("retire_worker"):
                slot.retiring = True  # a fresh process: the old one's allocator may be fragmented
            o = Outcome(h, result=result, node=task.node)
        if dead or (slot.retiring and not slot.tasks):
            self._replace(slot)
        return o

    def _drain_progress(self) -> None:
        try:
            rows = ray.get(self._inbox.drain.remote(), timeout=10)
        except Exception:
            return
        for key, attempt, row in rows:
            if self.progress is not None and Handle(key, attempt) in self._tasks:
                try:
                    self.progress(key, row)
                except Exception:  # a broken progress view never stops a sweep
                    log.exception("progress callback failed")

    def share(self, blob: bytes) -> "Shared":
        """Bytes any worker can fetch (see "Shared files" above); held until shutdown."""
        ref = ray.put(blob)
        self._shared.append(ref)
        return Shared(ref)

    def cancel(self, handle: Handle, reason: str = "cancelled") -> None:
        task = self._tasks.pop(handle, None)
        if task is None:
            return
        if task.slot is None:  # still queued here
            self._queued.remove(task)
        else:  # ray.kill stops the task, and any other of its actor's; a fresh actor takes the slot
            for other in task.slot.tasks:
                if other is not task and self._tasks.pop(other.handle, None) is not None:
                    self._done[other.handle] = Outcome(
                        other.handle, lost=f"its worker was stopped to cancel another task ({reason})",
                        retryable=True, node=other.node)
            task.slot.tasks.clear()
            self._replace(task.slot)
        self._done[handle] = Outcome(handle, lost=reason, retryable=False, node=task.node)

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        if ray.is_initialized() and self._gcs_ok(fresh=True):  # a cluster lost is not asked
            for actor in [s.actor for s in self._slots] + [getattr(self, "_inbox", None)]:
                if actor is not None:
                    self._kill(actor, check=False)
        self._slots.clear()
        self._tasks.clear()
        self._queued.clear()
        self._shared.clear()
        # a lost cluster: disconnect too, or Ray ends this process when it gives up on the GCS
        if (self._started_ray or self._lost) and ray.is_initialized():
            ray.shutdown()
        if self._reaper is not None:
            self._reaper.stop()

    def __enter__(self) -> "RayBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # -- views -----------------------------------------------------------------------------------

    @property
    def dashboard_hint(self) -> str | None:
        """One line for the driver to print: where the Ray dashboard listens (from ray.init's
        context: it moves off 8265 when that port is taken) and, with token authentication on (the
        default of a local Ray since 2.52), how to get in. None without a dashboard or when this
        process had called ray.init itself."""
        url = getattr(self._context, "dashboard_url", None)
        if not url:
            return None
        url = url if "://" in url else f"http://{url}"
        if not ray_private.token_auth_enabled():
            return f"Ray dashboard: {url}"
        return (f"Ray dashboard: {url} (token authentication: paste the output of `ray get-auth-token` "
                f"when the page asks, or send the header 'Authorization: Bearer <token>')")

    def running_per_node(self) -> dict[str, int]:
        """Trials running now, per node (`node_label`), for the runner's progress line."""
        return dict(Counter(t.node for t in self._tasks.values() if t.slot is not None))

    def workers(self) -> list[dict[str, Any]]:
        """One row per trial actor: node, pid, ready, the key of the task using its device
        (`running`) and those in their CPU tail (`tails`), for status views and tests."""
        return [{"node": s.node, "pid": s.pid, "ready": s.ready,
                 "running": next((t.handle.key for t in s.tasks if not t.in_tail), None),
                 "tails": [t.handle.key for t in s.tasks if t.in_tail]} for s in self._slots]


@contextlib.contextmanager
def _without_secrets():
    """Hide W&B credentials while the embedded Ray starts: its processes, and the workers they
    start, inherit the environment of that moment. The driver gets them back afterwards."""
    saved = {k: os.environ.pop(k) for k in WORKER_SECRETS if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


@contextlib.contextmanager
def _workers_at_our_priority():
    """An embedded Ray's workers at the driver's own priority: Ray starts them 15 nice levels below
    it (RAY_worker_niceness), and under any other work on the machine a trial then gets a sliver of
    a core (docs/performance.md, "Worker priority"). The trials are the sweep's work, as a
    `unlearn-sweep trial` is; `nice -n 10 unlearn-sweep run ...` lowers the whole sweep. A value
    the user set is kept."""
    if ray_private.WORKER_NICENESS_ENV in os.environ:
        yield
        return
    os.environ[ray_private.WORKER_NICENESS_ENV] = "0"
    try:
        yield
    finally:
        os.environ.pop(ray_private.WORKER_NICENESS_ENV, None)


def _token_mode_if_token() -> None:
    """Ray clusters use token authentication by default, but a driver connecting to one only sends
    its token in token mode: turn that on when a token is at hand and the mode is not set."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(path):
        os.environ["RAY_AUTH_MODE"] = "token"
        try:  # Ray read the mode when it was imported: have it read it again
            ray_private.reload_auth_mode()
        except Exception:  # noqa: BLE001 - an older or newer Ray: the error then says what to set
            pass


@contextlib.contextmanager
def _stderr_kept_on_success():
    """Hold back what native code writes to stderr meanwhile: shown if the block succeeds, dropped
    if it raises (the caller then says what went wrong in one line)."""
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as buf:
        os.dup2(buf.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if ok:
                buf.seek(0)
                sys.stderr.write(buf.read().decode(errors="replace"))


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Refuse an address nothing answers at within `timeout_s` (ray.init itself retries for
    minutes). "auto" and addresses without a port are left to ray.init, which fails fast for them."""
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        raise ClusterConfigError(f"cannot connect to Ray at {address!r}: nothing answers at "
                                 f"{host}:{port} ({e.strerror or type(e).__name__})") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def _reason(e: BaseException) -> str:
    """A one-line reason for a lost worker, naming the kind of fault."""
    text = str(e)
    if isinstance(e, rex.OutOfMemoryError):
        kind = "worker killed by Ray's memory monitor"
    elif isinstance(e, rex.NodeDiedError) or "node" in text.lower() and "died" in text.lower():
        kind = "node lost"
    elif isinstance(e, (rex.RayActorError, rex.WorkerCrashedError)):
        kind = "worker died"
    elif isinstance(e, rex.ObjectLostError):
        kind = "result lost"
    else:
        kind = type(e).__name__
    detail = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{kind} ({type(e).__name__}: {detail[:200]})" if detail else kind
