"""Running the scenarios: real pytest runs in process groups of their own, a fault at a polled point,
what is left measured before and after `svc-harness clean`, and the bed's own sweep at the end.

Every process the bed starts (pytest, `svc-harness status`, `svc-harness clean`) gets a session of
its own (start_new_session): the group can be signalled as a whole, and a Ctrl-C at the bed's
terminal reaches only the bed, which then stops the scenario's run and sweeps its prefix. Short
commands (docker, kubectl, iptables-save) go through harness.runner.
"""
from __future__ import annotations

import logging
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import config, engine
from ..cluster import claim_name
from ..owners import OWNER_ENV, Owner
from ..runner import DEFAULT, Runner
from ..waits import Wait, WaitTimeout
from . import inventory, results
from .scenarios import CLEAN_RECOVERS, GARBAGE, POINTS, Scenario, cluster_prefix, pytest_argv

log = logging.getLogger(__name__)

PLAIN_NAME = "faults-plain"
TEST_NAMESPACE_LABEL = "app.kubernetes.io/managed-by=svc-harness"  # harness.kube.create_namespace
TOOL_TIMEOUT = 900      # status or clean (clean deletes clusters: ~22 s for two seen)
STOP_TIMEOUT = 120      # a run the bed stops itself (SIGTERM: it deletes its clusters) before SIGKILL
DRAIN_TIMEOUT = 60      # a run's process group empty after its controller's exit (orphans of kind included)
# How status must say that a marker cannot be read (the corrupt-marker scenario).
UNREADABLE = re.compile(r"unreadable|cannot be read|can't be read|could not read|corrupt|not valid|invalid",
                        re.IGNORECASE)


class BedError(RuntimeError):
    """The bed cannot run here (no engine, no node image, no iptables-save): what to do instead."""


def _env() -> dict:
    # A run the bed starts owns its clusters itself (not an inherited tool owner, harness.owners).
    return {k: v for k, v in os.environ.items() if k != OWNER_ENV}


# ---------------------------------------------------------------- a pytest run of a scenario
@dataclass
class Run:
    proc: subprocess.Popen
    owner: Owner
    log_path: Path
    log_file: object
    read_fd: int | None = None            # the output pipe's read end (hang_up_output)
    reader: threading.Thread | None = None
    stop_reading: threading.Event = field(default_factory=threading.Event)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def start(cls, argv: list[str], log_path: Path, through_pipe: bool) -> "Run":
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "wb")
        log.info("$ %s  (log: %s)", shlex.join(argv), log_path)
        if not through_pipe:
            proc = subprocess.Popen(argv, cwd=config.REPO, env=_env(), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            return cls(proc, Owner.of(proc.pid), log_path, out)
        r, w = os.pipe()
        proc = subprocess.Popen(argv, cwd=config.REPO, env=_env(), stdin=subprocess.DEVNULL, stdout=w, stderr=w,
                                start_new_session=True)
        os.close(w)
        run = cls(proc, Owner.of(proc.pid), log_path, out, read_fd=r)
        run.reader = threading.Thread(target=run._copy, daemon=True)
        run.reader.start()
        return run

    def _copy(self) -> None:
        """The output pipe into the log, until hang_up (or the pipe's end)."""
        while not self.stop_reading.is_set():
            ready, _, _ = select.select([self.read_fd], [], [], 0.2)
            if ready:
                data = os.read(self.read_fd, 65536)
                if not data:
                    return
                self.log_file.write(data)
                self.log_file.flush()

    def hang_up(self) -> None:
        """Close the run's output (a terminal or CI step that is gone): its next write fails (EPIPE)."""
        if self.read_fd is None:
            return
        self.stop_reading.set()
        self.reader.join(5)
        os.close(self.read_fd)
        self.read_fd = None

    def wait_exit(self, timeout: float, what: str) -> int:
        """Poll until the controller exits; WaitTimeout (saying `what`) after `timeout`."""
        return Wait(what, timeout=timeout, interval=0.1).until(self.proc.poll, lambda rc: rc is not None)

    def drain(self) -> list[str]:
        """Wait until no process of the run's group is left; the ones still alive after DRAIN_TIMEOUT
        (then killed) as text."""
        try:
            Wait(f"every process of the run's group {self.pid} to end", timeout=DRAIN_TIMEOUT).until(
                lambda: inventory.processes(self.pid), lambda procs: not procs)
            return []
        except WaitTimeout:
            left = [f"{pid}: {' '.join(inventory.cmdline(pid))[:120]}" for pid in inventory.processes(self.pid)]
            _kill_group(self.pid)
            return left

    def stop(self) -> None:
        """The bed ends a run it no longer watches: SIGTERM to the controller (it deletes its clusters),
        then SIGKILL to the group if it is still there."""
        if self.proc.poll() is None:
            log.info("stopping the run (pid %d) with SIGTERM", self.pid)
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.wait_exit(STOP_TIMEOUT, f"the run (pid {self.pid}) to exit after the bed's SIGTERM")
            except (OSError, WaitTimeout) as e:
                log.warning("%s; killing its process group", e)
        _kill_group(self.pid)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log.warning("the run's controller (pid %d) survived SIGKILL for 30 s", self.pid)
        self.hang_up()
        self.log_file.close()


def _kill_group(pgid: int) -> None:
    if inventory.processes(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_tool(argv: list[str], log_path: Path, timeout: float = TOOL_TIMEOUT) -> tuple[int, float, str]:
    """A harness command in a session of its own: (exit code, seconds, output). 124 after `timeout`."""
    log.info("$ %s  (log: %s)", shlex.join(argv), log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(argv, cwd=config.REPO, env=_env(), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = Wait(f"{shlex.join(argv[1:])} to end", timeout=timeout, interval=0.2).until(
                proc.poll, lambda rc: rc is not None)
        except WaitTimeout:
            _kill_group(proc.pid)
            proc.wait(timeout=30)
            rc = 124
    return rc, time.monotonic() - started, log_path.read_text(errors="replace")


def clean_argv() -> list[str]:
    return [sys.executable, "-m", "harness.cli", "clean"]  # never --force: other runs' things stay


def status_argv() -> list[str]:
    return [sys.executable, "-m", "harness.cli", "status"]


# ---------------------------------------------------------------- the point
def observe(s: Scenario, run: Run, prefix: str, runner: Runner = DEFAULT) -> dict:
    """The scenario's point, as far as it can be seen now; "reached" says whether it is."""
    seen: dict = {"exit": run.proc.poll()}
    clusters = sorted(p.stem for p in (config.CACHE / "clusters").glob(f"{prefix}-*.json"))
    procs = inventory.processes(run.pid)
    seen["clusters"] = clusters
    if s.point == "kind-create-running":
        nodes = {n: len(engine.list_containers(runner, f"{config.KIND_CLUSTER_LABEL}={n}") or []) for n in clusters}
        creating = [n for n in clusters if any(inventory.is_kind_create(inventory.cmdline(p), n) for p in procs)]
        seen.update(node_containers=nodes, kind_create_running=creating)
        seen["reached"] = any(nodes[n] and n in creating for n in clusters)
    elif s.point == "test-running":
        spaces = {n: _active_test_namespaces(n, runner) for n in clusters}
        holders = {n: [p for p in procs if inventory.holds_file(p, f"/{n}.use.lock")] for n in clusters}
        seen.update(active_test_namespaces=spaces, use_lock_holders=holders)
        targets = [p for n in clusters if spaces[n] for p in holders[n]
                   if s.target != "worker" or procs.get(p) == run.pid]
        seen["target_pid"] = targets[0] if targets else None
        seen["reached"] = bool(targets)
    else:
        raise ValueError(f"{s.name}: point {s.point!r} has no run to watch")
    return seen


def _active_test_namespaces(cluster: str, runner: Runner) -> list[str]:
    kubeconfig = config.CACHE / "kubeconfigs" / f"{cluster}.yaml"
    if not kubeconfig.exists():
        return []
    res = runner.run([config.tool("kubectl"), "--kubeconfig", str(kubeconfig), "get", "namespaces", "-l",
                      TEST_NAMESPACE_LABEL, "-o",
                      "jsonpath={range .items[*]}{.metadata.name}={.status.phase}{'\\n'}{end}"],
                     check=False, timeout=15)
    return [line.split("=", 1)[0] for line in res.stdout.splitlines() if line.endswith("=Active")]


# ---------------------------------------------------------------- one scenario
class Trial:
    """One scenario, start to sweep; `result` is what results.py judges and renders."""

    def __init__(self, s: Scenario, out: Path, extra: list[str], runner: Runner = DEFAULT):
        self.s, self.out, self.extra, self.runner = s, out, extra, runner
        self.prefix = cluster_prefix(s)
        self.run: Run | None = None
        self.run_ids: set[str] = set()
        self.before = inventory.Inventory()
        self.result: dict = {
            "name": s.name, "fault": s.fault, "target": s.target, "point": s.point, "expect": s.expect,
            "prefix": self.prefix, "exit_expected": s.exit_code, "exit_within": s.exit_within,
            "exit_seen": None, "fault_to_exit": None, "point_reached": False, "point_seconds": None,
            "point_seen": "", "left": {}, "tolerated": list(s.tolerate), "clean_ran": False, "clean_rc": None,
            "clean_seconds": None, "left_after_clean": {}, "swept": [], "plain_changes": [], "problems": [],
            "log": str(out)}

    def go(self) -> dict:
        r = self.result
        log.info("scenario %s: %s -> %s at %s (cluster prefix %s)", self.s.name, self.s.fault, self.s.target,
                 self.s.point, self.prefix)
        try:
            self.before = inventory.take(self.prefix, set(), self.runner)
            if self.s.needs_cluster:
                self._signal_run()
            else:
                self._corrupt_markers()
        except Exception as e:  # noqa: BLE001 - the scenario is red with the reason; the sweep still runs
            log.exception("scenario %s: the bed failed", self.s.name)
            r["problems"].append(f"the bed failed: {type(e).__name__}: {e}")
        finally:
            if self.run:
                self.run.stop()
                self.run_ids |= inventory.run_ids_of(self.run.owner)
            for rid in self.run_ids:  # the clean-up's own output once the run's output was gone (SIGHUP)
                abort_log = config.CACHE / "runs" / f"abort-{rid}.log"
                if abort_log.exists():
                    shutil.copyfile(abort_log, self.out / abort_log.name)
            try:
                r["swept"] = inventory.sweep(self.prefix, self.run_ids, self.runner)
            except Exception as e:  # noqa: BLE001
                r["problems"].append(f"the bed's sweep of {self.prefix} failed ({type(e).__name__}: {e}): "
                                     f"look for it with `svc-harness status` and `docker ps -a | grep {self.prefix}`")
        return r

    def _signal_run(self) -> None:
        s, r = self.s, self.result
        argv = pytest_argv(s, self.prefix, self.out / "artifacts", self.extra)
        started = time.monotonic()
        self.run = run = Run.start(argv, self.out / "pytest.log", s.hang_up_output)
        try:
            seen = Wait(f"the point {s.point} ({POINTS[s.point]})", timeout=s.point_timeout, interval=1.0).until(
                lambda: observe(s, run, self.prefix, self.runner), lambda o: o["reached"] or o["exit"] is not None)
        except WaitTimeout as e:
            r["point_seen"] = f"{e} (log: {run.log_path})"
            return
        self.run_ids |= inventory.run_ids_of(run.owner)
        if not seen["reached"]:
            r["point_seen"] = (f"the run exited ({seen['exit']}) before the point ({POINTS[s.point]}); last seen: "
                               f"{seen} (log: {run.log_path})")
            return
        r.update(point_reached=True, point_seconds=round(time.monotonic() - started, 1), point_seen=str(seen))
        target = {"controller": run.pid, "group": run.pid, "worker": seen.get("target_pid")}[s.target]
        log.info("scenario %s: point reached after %.0fs (%s); %s to %s %d", s.name, r["point_seconds"], seen,
                 s.fault, s.target, target)
        if s.hang_up_output:
            run.hang_up()  # just before the signal, as a terminal that closes
        fault_at = time.monotonic()
        if s.target == "group":
            os.killpg(target, s.signum)
        else:
            os.kill(target, s.signum)
        try:
            r["exit_seen"] = run.wait_exit(s.exit_within * 2, f"the run (pid {run.pid}) to exit after {s.fault}")
            r["fault_to_exit"] = round(time.monotonic() - fault_at, 1)
        except WaitTimeout:
            r["problems"].append(f"no exit within {s.exit_within * 2:.0f}s of {s.fault}; the bed killed the run's "
                                 "process group")
            _kill_group(run.pid)
            r["exit_seen"] = run.proc.wait(timeout=30)
        stragglers = run.drain()
        if stragglers:
            r["problems"].append(f"processes of the run alive {DRAIN_TIMEOUT}s after its exit (killed): "
                                 + "; ".join(stragglers))
        self.run_ids |= inventory.run_ids_of(run.owner)
        after = inventory.take(self.prefix, self.run_ids, self.runner)
        r["left"] = inventory.leftovers(self.before, after)
        if inventory.judged(r["left"], s.tolerate) or s.expect == CLEAN_RECOVERS:
            self._clean()

    def _clean(self) -> None:
        r = self.result
        rc, seconds, _ = run_tool(clean_argv(), self.out / "clean.log")
        r.update(clean_ran=True, clean_rc=rc, clean_seconds=round(seconds, 1))
        r["left_after_clean"] = inventory.leftovers(self.before, inventory.take(self.prefix, self.run_ids, self.runner))
        log.info("scenario %s: clean exit %d in %.0fs; left after it: %s", self.s.name, rc, seconds,
                 r["left_after_clean"] or "nothing")

    def _corrupt_markers(self) -> None:
        """Garbage in fresh markers of made-up clusters: status and clean must cope, a claim must work."""
        r = self.result
        names = {key: f"{self.prefix}-{key}" for key in GARBAGE}
        self._write_garbage(names)
        r.update(point_reached=True, point_seconds=0.0, point_seen=f"{len(names)} corrupt markers written")
        st_rc, st_s, st_out = run_tool(status_argv(), self.out / "status.log")
        cl_rc, cl_s, cl_out = run_tool(clean_argv(), self.out / "clean.log")
        r["problems"] += tool_problems("status", st_rc, st_out, names, say_unreadable=True)
        r["problems"] += tool_problems("clean", cl_rc, cl_out, names)
        r.update(exit_seen=st_rc or cl_rc, clean_ran=True, clean_rc=cl_rc, clean_seconds=round(cl_s, 1),
                 status_seconds=round(st_s, 1))
        r["left_after_clean"] = inventory.leftovers(self.before, inventory.take(self.prefix, set(), self.runner))
        # A following run claims the name (harness.cluster.claim_name), with the garbage back in place.
        self._write_garbage(names)
        for key, name in names.items():
            try:
                got = claim_name(name, Owner.of(), engine.of(self.runner))
                if got != name:
                    r["problems"].append(f"a run claiming {name} over a {key} marker got {got} instead")
            except Exception as e:  # noqa: BLE001 - what a following run would die of
                r["problems"].append(f"a run claiming {name} over a {key} marker fails: {type(e).__name__}: {e}")
            (config.CACHE / "clusters" / f"{name}.json").unlink(missing_ok=True)

    @staticmethod
    def _write_garbage(names: dict[str, str]) -> None:
        clusters = config.CACHE / "clusters"
        clusters.mkdir(parents=True, exist_ok=True)
        for key, name in names.items():
            (clusters / f"{name}.json").write_bytes(GARBAGE[key])


def tool_problems(tool: str, rc: int, output: str, names: dict[str, str], say_unreadable: bool = False) -> list[str]:
    """What is wrong with status's or clean's answer to corrupt markers `names` (payload -> cluster)."""
    problems = [f"{tool} exited {rc}"] if rc else []
    if "Traceback" in output:
        last = [line for line in output.splitlines() if line.strip()][-1:]
        problems.append(f"{tool} crashed: {last[0].strip() if last else '?'}")
    for key, name in names.items():
        lines = [line.strip() for line in output.splitlines() if name in line]
        if not lines:
            problems.append(f"{tool} does not name {name} (its marker: {key})")
        elif say_unreadable and not any(UNREADABLE.search(line) for line in lines):
            problems.append(f"{tool} names {name} (its marker: {key}) but not that it cannot be read: {lines[0]!r}")
    return problems


# ---------------------------------------------------------------- all of them
def preflight(chosen: list[Scenario], plain: bool, runner: Runner = DEFAULT) -> None:
    engine.engine_ready(runner)
    res = runner.run(["iptables-save"], check=False, timeout=30)
    if not res.ok:
        raise BedError(f"`iptables-save` failed ({res.stderr.strip()[:200]}): the bed must see the guard rules; "
                       "run it as root, like the harness")
    if (plain or any(s.needs_cluster for s in chosen)) and not engine.image_id(runner, config.node_image_tag()):
        raise BedError(f"no node image {config.node_image_tag()} on the host engine: a run would pull one (and "
                       "miss the points); build it first: `svc-harness images build`")
    if plain:
        from ..byo.testbed import ForeignCluster
        if ForeignCluster(PLAIN_NAME, "iptables", config.CACHE / "faults", config.node_image_tag(), runner).exists():
            raise BedError(f"a kind cluster named {PLAIN_NAME} exists already; it is not the bed's to use or delete")


def run_all(chosen: list[Scenario], artifacts: Path, extra: list[str], plain: bool,
            runner: Runner = DEFAULT) -> int:
    try:
        preflight(chosen, plain, runner)
    except (BedError, engine.PreflightError) as e:
        print(f"svc-harness faults: {e}", file=sys.stderr)
        return 2
    data: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "kubernetes": config.versions()["KUBERNETES_VERSION"],
                  "node_image": config.node_image_tag(), "extra": extra, "plain_cluster": None, "stopped": "",
                  "scenarios": []}
    started = time.monotonic()
    bed = None
    try:
        if plain:
            from ..byo.testbed import ForeignCluster
            (config.CACHE / "faults").mkdir(parents=True, exist_ok=True)
            bed = ForeignCluster(PLAIN_NAME, "iptables", config.CACHE / "faults", config.node_image_tag(), runner)
            bed.create()
            data["plain_cluster"] = {"name": PLAIN_NAME, "fingerprint": inventory.fingerprint(PLAIN_NAME, runner)}
        for s in chosen:
            before = inventory.fingerprint(PLAIN_NAME, runner) if bed else None
            r = Trial(s, artifacts / s.name, extra, runner).go()
            if bed:
                r["plain_changes"] = inventory.fingerprint_changes(before, inventory.fingerprint(PLAIN_NAME, runner))
            results.judge(s, r)
            data["scenarios"].append(r)
            log.info("scenario %s: %s%s", s.name, r["verdict"].upper(),
                     "" if r["verdict"] == "green" else ": " + "; ".join(r["reasons"]))
    except KeyboardInterrupt as e:
        data["stopped"] = f"stopped by {e or 'Ctrl-C'} after {len(data['scenarios'])} scenario(s)"
        log.warning("%s; the scenario's run was stopped and its prefix swept", data["stopped"])
    finally:
        if bed:
            bed.delete()
            bed.kubeconfig.unlink(missing_ok=True)
            bed.config_file.unlink(missing_ok=True)
            engine.of(runner).remove_guard_if_unused()
        data["seconds"] = round(time.monotonic() - started, 1)
        data["verdict"] = results.overall(data)
        md, js = results.write(data, artifacts)
        print(md.read_text())
        print(f"svc-harness faults: {md} (+ {js.name}); verdict {data['verdict'].upper()}")
    return 0 if data["verdict"] == "green" else 1
