"""A real cluster on one machine, for tests and for trying a cluster by hand (docs/cluster.md).

    with LocalCluster(workers=2, logs=tmp_path) as c:   # a head and two workers, Ray running
        driver = c.popen(c.head, [*DRIVE, "run", spec, "--out", run_dir, "--address", c.address])
        c.kill(c.workers[0])                            # the whole node, every process of it
        c.link(c.workers[1], up=False)                  # cut off the network

Each node is a small "machine": a network namespace with its own address on a private bridge,
its own host name, /etc/hosts and /tmp (a UTS and a mount namespace: SLURM's daemons tell the nodes
apart by name, and Ray's default /tmp/ray is the node's own), and its own working directory, HOME
and oracle cache, `<base>/<name>` (base: /var/tmp/usc-<id>, outside /tmp): nodes share no directory
unless a test hands them one. The bridge lives in a namespace of its own: nothing is
attached to the machine's network, so every packet stays inside the cluster's namespaces (and
their loopbacks), and several clusters (other test sessions) can use the same addresses at once.

Everything is started by the harness as child processes and ended by process id: Ray with
`ray start --block` (SIGTERM to it stops its node), a killed node by SIGKILL to every process in its
namespace (that is what "its processes" means here: nothing else can be in it). `close()` (also on
a failing test) ends every process of every node, deletes the namespaces and the bridge, and
removes the nodes' folders (their *.log files copied to `logs` first, for a failing test's report);
never `ray stop`, never a process found by its name.

Token authentication stays on: one random token for the cluster, in every node's environment
(RAY_AUTH_TOKEN, RAY_AUTH_MODE=token) and in the drivers started with `popen`. Ray's health check
is tightened (`FAST_HEALTH_CHECK`, Ray's own system-config variables read by the GCS) so that a lost
node is noticed within seconds instead of about half a minute.

Needs root, `ip`, `nsenter` and `unshare` (util-linux); `unavailable()` says why not, for skips.
"""
from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's ray, unlearn-sweep


def _under_tmp(*paths: Path) -> list[Path]:
    """The folders right under /tmp that hold any of `paths` (absolute, symlinks kept)."""
    tops = {Path("/tmp", Path(os.path.abspath(p)).relative_to("/tmp").parts[0])
            for p in paths if Path(os.path.abspath(p)).is_relative_to("/tmp")}
    return sorted(tops)
RAY_PORT = 6379  # every node has its own network: no port is shared with anything else
SUBNET = "10.77.0"

# Ray's system config, read from RAY_<name> by the GCS (src/ray/common/ray_config_def.h): a node
# whose raylet misses 5 health checks 500 ms apart (each given 1 s) is marked dead, within ~3 s of
# its processes dying and ~7-9 s of it dropping off the network. Ray's defaults (first check after
# 5 s, then every 3 s, each given 10 s, 5 misses) take ~15 s and about a minute.
FAST_HEALTH_CHECK = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "500",
                     "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "5"}


def unavailable() -> str | None:
    """Why this machine cannot host a LocalCluster (None when it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = f"usc-probe-{uuid.uuid4().hex[:6]}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


def _ns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes (its parent reaps it)
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


@dataclass
class Node:
    """One machine of the cluster. `dir` is its working directory and HOME; `cache` its
    UNLEARN_SWEEP_CACHE."""

    name: str
    ns: str  # the network namespace (/run/netns/<ns>)
    ip: str
    port: str  # its end of the bridge, in the bridge's namespace
    dir: Path
    holder: subprocess.Popen | None = None  # holds the node's UTS and mount namespaces
    ray: subprocess.Popen | None = None  # `ray start --block`
    started: list[subprocess.Popen] = field(default_factory=list)

    @property
    def cache(self) -> Path:
        return self.dir / "cache"

    def pids(self) -> list[int]:
        """Every live process in this node's network namespace but the holder."""
        me = _ns_id(f"/run/netns/{self.ns}")
        if me is None:
            return []
        holder = self.holder.pid if self.holder else None
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != holder and _ns_id(f"/proc/{entry}/ns/net") == me \
                    and _alive(int(entry)):
                out.append(int(entry))
        return out


class LocalCluster:
    """`workers` worker nodes and a head, each with `cpus` CPUs for Ray (see the module docstring).
    `ray=False` makes the machines only (a test starts what it wants on them). `env`: more
    environment for every process on every node."""

    def __init__(self, workers: int = 2, cpus: float = 1, *, ray: bool = True,
                 env: dict[str, str] | None = None, health: dict[str, str] | None = None,
                 head_cpus: float | None = None, logs: Path | None = None):
        self.tag = uuid.uuid4().hex[:6]  # namespace names are machine-wide: unique per cluster
        self.logs = logs
        self.token = secrets.token_hex(32)
        self.extra_env = dict(env or {})
        self.health = dict(FAST_HEALTH_CHECK if health is None else health)
        self.cpus = cpus
        self.nodes: list[Node] = []
        # not under /tmp: each node has its own /tmp, where the others' folders would not be seen
        self.base = Path(tempfile.mkdtemp(prefix=f"usc-{self.tag}-", dir="/var/tmp"))
        self.bridge = f"usc-{self.tag}-br"
        self._closed = False
        try:
            _ip("netns", "add", self.bridge)
            _ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.bridge, "link", "set", "br0", "up")
            _ip("-n", self.bridge, "link", "set", "lo", "up")
            self.add_node("head")
            for i in range(workers):
                self.add_node(f"w{i + 1}")
            if ray:
                self.start_ray(self.head, cpus=cpus if head_cpus is None else head_cpus)
                for w in self.workers:
                    self.start_ray(w, cpus=cpus)
                self.wait_for_nodes(1 + workers)
        except BaseException:
            self.close()
            raise

    # -- machines ---------------------------------------------------------------------------------
    @property
    def head(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> list[Node]:
        return self.nodes[1:]

    @property
    def address(self) -> str:
        return f"{self.head.ip}:{RAY_PORT}"

    def add_node(self, name: str) -> Node:
        """A new machine on the bridge (no Ray yet: `start_ray`)."""
        i = len(self.nodes)
        ns = f"usc-{self.tag}-{i}"
        node = Node(name, ns, f"{SUBNET}.{i + 1}", f"p{i}", self.base / name)
        self.nodes.append(node)
        for d in (node.dir, node.cache, node.dir / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        (node.dir / "tmp").chmod(0o1777)
        _ip("netns", "add", ns)
        _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", node.port,
            "netns", self.bridge)
        _ip("-n", self.bridge, "link", "set", node.port, "master", "br0")
        _ip("-n", self.bridge, "link", "set", node.port, "up")
        _ip("-n", ns, "addr", "add", f"{node.ip}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        self._write_hosts()
        # the holder: a process in the node's network namespace that unshares a UTS namespace (its
        # host name) and a private mount namespace (its /etc/hosts and /tmp); every later process
        # joins them. nsenter and unshare exec (no fork): its pid is the `sleep` that holds them
        hosts = self.base / f"hosts-{name}"
        shutil.copy(self.base / "hosts", hosts)
        # a checkout (and its venv) under /tmp, as a CI clone may be, stays seen through the node's
        # own /tmp: bound into it first (in the node's private namespace), carried by --rbind
        tmp = node.dir / "tmp"
        keep = "".join(f"mkdir -p {shlex.quote(str(tmp / top.name))} && mount --bind {shlex.quote(str(top))} "
                       f"{shlex.quote(str(tmp / top.name))} && " for top in _under_tmp(ROOT, BIN))
        node.holder = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{ns}", "unshare", "--uts", "--mount", "--propagation",
             "private", "sh", "-c", f"hostname {name} && mount --bind {hosts} /etc/hosts && {keep}"
             f"mount --rbind {shlex.quote(str(tmp))} /tmp && echo ready && exec sleep infinity"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        line = node.holder.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"node {name}: {line}{node.holder.stderr.read()}")
        return node

    def _write_hosts(self) -> None:
        lines = ["127.0.0.1 localhost"] + [f"{n.ip} {n.name}" for n in self.nodes]
        (self.base / "hosts").write_text("\n".join(lines) + "\n")
        for n in self.nodes:  # the bind mount shows the file's new content to every node
            p = self.base / f"hosts-{n.name}"
            if p.exists():
                p.write_text("\n".join(lines) + "\n")

    def env(self, node: Node, **extra: str) -> dict[str, str]:
        """The environment of a process on `node`: its HOME and cache, the cluster's token, the code
        of this checkout on PYTHONPATH, W&B off."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RAY_", "SLURM_")) and k not in ("UNLEARN_SWEEP_CACHE", "VIRTUAL_ENV")}
        env.update({"HOME": str(node.dir), "UNLEARN_SWEEP_CACHE": str(node.cache),
                    "PYTHONPATH": str(ROOT), "PATH": f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}",
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "WANDB_MODE": "disabled",
                    "UNLEARN_SWEEP_RAY_DASHBOARD": "0", **self.health, **self.extra_env, **extra})
        return env

    def popen(self, node: Node, args: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None, **kw) -> subprocess.Popen:
        """Start `args` on `node` (its network, host name, /etc/hosts; cwd its directory); the
        process is ended by `close()` if still running. stdout/stderr: as `kw` says (default: a
        log file in the node's directory)."""
        if "stdout" not in kw:
            log = open(node.dir / f"{Path(args[0]).name}-{len(node.started)}.log", "w")  # noqa: SIM115
            kw.update(stdout=log, stderr=subprocess.STDOUT)
        p = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{node.ns}", f"--uts=/proc/{node.holder.pid}/ns/uts",
             f"--mount=/proc/{node.holder.pid}/ns/mnt", f"--wd={cwd or node.dir}", "--", *args],
            env=env or self.env(node), start_new_session=True, **kw)
        node.started.append(p)
        # nsenter joins the namespaces after the fork: until then the child is still in this
        # machine's, and kill()/pids() would miss it. Return only once it is inside (or gone).
        me, deadline = _ns_id(f"/run/netns/{node.ns}"), time.monotonic() + 10
        while p.poll() is None and _ns_id(f"/proc/{p.pid}/ns/net") != me and time.monotonic() < deadline:
            time.sleep(0.005)
        return p

    def run(self, node: Node, args: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        """Run `args` on `node` to the end; its output as text."""
        p = self.popen(node, args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise AssertionError(f"{args} on {node.name} timed out after {timeout} s: {err[-2000:]}") from None
        return subprocess.CompletedProcess(args, p.returncode, out, err)

    # -- Ray ------------------------------------------------------------------------------------
    def start_ray(self, node: Node, cpus: float | None = None, resources: dict | None = None) -> None:
        """`ray start --block` on `node`: the head when it is the first node, else a worker joining it.
        Returns once this `ray start` says Ray runs (see `wait_for_nodes` for the whole cluster)."""
        cpus = self.cpus if cpus is None else cpus
        args = [str(BIN / "ray"), "start", "--block", f"--node-ip-address={node.ip}",
                f"--num-cpus={cpus:g}", "--disable-usage-stats", "--object-store-memory=100000000"]
        if resources:
            import json
            args.append(f"--resources={json.dumps(resources)}")
        if node is self.head:
            args += ["--head", f"--port={RAY_PORT}", "--include-dashboard=false"]
        else:
            args += [f"--address={self.address}"]
        log = node.dir / f"ray-{len(node.started)}.log"
        node.ray = self.popen(node, args, stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
        deadline = time.monotonic() + 120
        while "This command will now block" not in log.read_text():
            if node.ray.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start on {node.name} failed: {log.read_text()[-3000:]}")
            time.sleep(0.2)

    def ray_nodes(self, on: Node | None = None) -> int:
        """Live Ray nodes, as `ray status` (asked on `on`, default the head) lists them."""
        r = self.run(on or self.head, [str(BIN / "ray"), "status", f"--address={self.address}"],
                     timeout=60)
        if r.returncode != 0:
            return 0
        return count_ray_status_nodes(r.stdout)

    def wait_for_nodes(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while (got := self.ray_nodes()) != n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{got} Ray node(s) alive, {n} expected, after {timeout} s")
            time.sleep(0.5)

    # -- faults -----------------------------------------------------------------------------------
    def kill(self, node: Node, sig: int = signal.SIGKILL, within: float = 30) -> float:
        """Every process of `node` gets `sig` (SIGKILL: the machine died), again until none is left;
        returns when that was (time.monotonic())."""
        deadline = time.monotonic() + within
        while pids := node.pids():
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"node {node.name}: processes {pids} outlived {sig!r}")
            time.sleep(0.05)
        for p in node.started:  # reap our children among them
            if p.poll() is None:
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        node.ray = None
        return time.monotonic()

    def link(self, node: Node, up: bool) -> None:
        """Unplug (or plug back) the node's cable: its port on the bridge goes down; packets to and
        from it are dropped, its processes keep running."""
        _ip("-n", self.bridge, "link", "set", node.port, "up" if up else "down")

    # -- the end ----------------------------------------------------------------------------------
    def close(self) -> None:
        """End every process of every node (SIGTERM to `ray start`, then SIGKILL to whatever is left
        in the namespace), delete the namespaces, the bridge and the nodes' folders (their logs
        copied to `logs` first)."""
        if self._closed:
            return
        self._closed = True
        for node in self.nodes:  # graceful first: ray start --block stops its node on SIGTERM
            if node.ray is not None and node.ray.poll() is None:
                node.ray.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for node in self.nodes:
            if node.ray is not None:
                try:
                    node.ray.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        errors = []
        for node in self.nodes:
            try:
                self.kill(node)
            except AssertionError as e:
                errors.append(str(e))
            if node.holder is not None:
                node.holder.kill()
                node.holder.wait()
        for node in self.nodes:
            subprocess.run(["ip", "netns", "del", node.ns], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.bridge], capture_output=True)
        if self.logs is not None:  # each node's process logs, SLURM's
            for log in self.base.glob("*/*.log"):
                (self.logs / log.parent.name).mkdir(parents=True, exist_ok=True)
                shutil.copy(log, self.logs / log.parent.name / log.name)
        shutil.rmtree(self.base, ignore_errors=True)
        if errors:
            raise AssertionError("; ".join(errors))

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def count_ray_status_nodes(text: str) -> int:
    """Live nodes in `ray status` output: the `1 node_<id>` lines before its "Pending:" section."""
    live = text.split("Pending:", 1)[0]
    return len(re.findall(r"^\s*\d+\s+node_[0-9a-f]+", live, re.M))


def namespaces_left(cluster: LocalCluster) -> list[str]:
    """The cluster's namespaces still listed by `ip netns list` (for tests of the teardown)."""
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return [ln.split()[0] for ln in r.stdout.splitlines() if ln.startswith(f"usc-{cluster.tag}-")]


# -- SLURM ------------------------------------------------------------------------------------------

SLURM_CONF = """\
# a SLURM cluster for tests (tests/cluster_util.py): no munge, no cgroups, state under {dir}
ClusterName=usc{tag}
SlurmctldHost={ctl}({ctl_ip})
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/none
CredType=cred/none
# quick for tests: a requeued job may start again cred_expire after (default 120 s), the scheduler
# looks every 2 s (default 60 s, backfill 30 s); SIGKILL comes KillWait after SIGTERM (the default)
AuthInfo=cred_expire=10
SchedulerParameters=sched_interval=2,bf_interval=2
KillWait=30
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SlurmUser=root
SlurmdUser=root
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool/%n
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd-%n.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd-%n.log
SlurmdParameters=config_overrides
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def slurm_unavailable() -> str | None:
    """Why SLURM cannot run here (None when it can): the cluster's needs, and Debian's slurm-wlm."""
    why = unavailable()
    if why:
        return why
    for tool in ("slurmctld", "slurmd", "sbatch", "scontrol"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install slurm-wlm)"
    return None


class Slurm:
    """slurmctld on the head and a slurmd on every node of `cluster` (made with ray=False), each
    node with `cpus` CPUs; authentication off (auth/none: nothing outside the namespaces reaches
    them), processes tracked by parentage (no cgroups), state, spool and logs in the cluster's
    folder. Commands (`sbatch`, `scontrol`, ...) run on the head with SLURM_CONF set; a job gets
    the environment it was submitted with (sbatch's default), SLURM_CONF included."""

    def __init__(self, cluster: LocalCluster, cpus: int = 2):
        self.c = cluster
        self.dir = cluster.base / "slurm"
        for d in (self.dir / "state", self.dir / "spool"):
            d.mkdir(parents=True, exist_ok=True)
        nodes = "\n".join(f"NodeName={n.name} NodeAddr={n.ip} CPUs={cpus} RealMemory=1000 State=UNKNOWN"
                          for n in cluster.nodes)
        self.conf = self.dir / "slurm.conf"
        self.conf.write_text(SLURM_CONF.format(dir=self.dir, tag=cluster.tag, ctl=cluster.head.name,
                                               ctl_ip=cluster.head.ip, nodes=nodes))
        self.daemons = [cluster.popen(cluster.head, ["slurmctld", "-D", "-f", str(self.conf)],
                                      env=self.env(cluster.head))]
        self.daemons += [cluster.popen(n, ["slurmd", "-D", "-f", str(self.conf)], env=self.env(n))
                         for n in cluster.nodes]
        deadline = time.monotonic() + 60
        while True:
            r = self.cmd(["sinfo", "-h", "-o", "%T %D"])
            if r.returncode == 0 and r.stdout.split() == ["idle", str(len(cluster.nodes))]:
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.daemons):
                raise RuntimeError(f"SLURM did not come up: {r.stdout} {r.stderr} "
                                   f"{self.log('slurmctld')[-2000:]}")
            time.sleep(0.3)

    def env(self, node: Node, **extra: str) -> dict[str, str]:
        return self.c.env(node, SLURM_CONF=str(self.conf), **extra)

    def log(self, name: str) -> str:
        p = self.dir / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def cmd(self, args: list[str], env: dict[str, str] | None = None, timeout: float = 60
            ) -> subprocess.CompletedProcess:
        return self.c.run(self.c.head, args, env=env or self.env(self.c.head), timeout=timeout)

    def sbatch(self, args: list[str], **env: str) -> int:
        r = self.cmd(["sbatch", "--parsable", *map(str, args)], env=self.env(self.c.head, **env))
        if r.returncode != 0:
            raise AssertionError(f"sbatch {args}: {r.stderr.strip()}")
        return int(r.stdout.strip().split(";")[0])

    def job(self, job: int) -> dict[str, str]:
        """`scontrol show job`'s fields (JobState, Restarts, ExitCode, ...)."""
        r = self.cmd(["scontrol", "show", "job", "-o", str(job)])
        return dict(kv.split("=", 1) for kv in r.stdout.split() if "=" in kv)

    def wait_job(self, job: int, states: tuple[str, ...] = ("COMPLETED",), timeout: float = 300,
                 restarts: int = 0) -> dict[str, str]:
        """Until the job is in one of `states` after at least `restarts` requeues; fails early
        on a state it cannot leave (FAILED, CANCELLED, ...) that is not asked for."""
        final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job)
            state = info.get("JobState", "")
            if state in states and int(info.get("Restarts", 0)) >= restarts:
                return info
            assert state not in final - set(states), f"job {job}: {info}"
            assert time.monotonic() < deadline, f"job {job} after {timeout} s: {info}"
            time.sleep(0.5)
