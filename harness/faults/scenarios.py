"""The fault scenarios as data: which run, at which point, which fault to whom, and what must follow.

A scenario's run is the smallest real one (E00 on one iptables cluster, suites/test_cluster.py)
under a cluster prefix of its own. The bed polls for the scenario's point, sends the fault and
judges what it sees against the expectation (harness.faults.results.verdict).
"""
from __future__ import annotations

import secrets
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

# Where in a run the fault lands: what the bed polls for (harness.faults.bed.observe).
POINTS = {
    "kind-create-running": "the run's cluster marker exists, a node container of that cluster exists, and "
                           "`kind create cluster --name <it>` still runs in the run's process group",
    "test-running": "a test namespace of the run (label app.kubernetes.io/managed-by=svc-harness) is Active "
                    "on its cluster while a process of the run holds the cluster's use lock "
                    "(runs/<run>/<cluster>.use.lock: held only while a test runs)",
    "markers-written": "no run: garbage written into fresh marker files of made-up cluster names",
}

# Who gets the fault.
TARGETS = {
    "controller": "the pytest controller's pid (as `kill <pid>` or a CI runner ending a step)",
    "group": "the run's whole process group (as Ctrl-C in a terminal, or `kill -9 -<pgid>`)",
    "worker": "the xdist worker running the test: the controller's child holding the cluster's use lock",
    "markers": "marker files under clusters/ (no process)",
}

# What must follow.
NOTHING_LEFT = "nothing-left"      # the run ends with the expected exit and removes what it made; no clean
CLEAN_RECOVERS = "clean-recovers"  # the run leaves things; `svc-harness clean` removes every one of them
TOOLS_COPE = "tools-cope"          # status and clean neither crash nor stay silent; a new claim is not blocked
EXPECTS = {
    NOTHING_LEFT: "exit as expected, nothing of the run left, clean not needed",
    CLEAN_RECOVERS: "leftovers (listed), then `svc-harness clean` removes all of them",
    TOOLS_COPE: "`svc-harness status` and `clean` exit 0 without a traceback, name each corrupt marker "
                "(status: says it cannot be read), and claiming that name again is not blocked",
}

# Kinds of leftovers (harness.faults.inventory.Inventory fields).
KINDS = ("containers", "markers", "kubeconfigs", "guard_rules", "run_dirs")

# The smallest real run: E00 on one iptables cluster, without MetalLB (E00 needs no LoadBalancer;
# installing it took 62 s of a 193 s run here).
SMALL_RUN = ("suites/test_cluster.py", "--proxy-mode=iptables", "--experiments=E00", "--lb-provider=none",
             "-p", "no:cacheprovider")

# Garbage for the corrupt-marker scenario: one made-up cluster per payload.
GARBAGE = {
    "truncated": b'{"created_by": "svc-harness", "mode": "iptab',
    "binary": bytes(range(0x80, 0x100)),
    "empty": b"",
    "json-list": b'["svc-harness", "iptables"]',
    "json-string": b'"svc-harness"',
    "owner-a-string": b'{"created_by": "svc-harness", "owner": "pid 1"}',
}

ABORT_KEEPS_RUN_DIR = ("abort_run (SIGTERM/SIGHUP) does not remove the run's directory under runs/; "
                       "`svc-harness clean` does")


@dataclass(frozen=True)
class Scenario:
    name: str
    tag: str                        # short; in the cluster prefix fault-<tag>-<random>
    fault: str                      # a signal name, or "corrupt marker"
    target: str                     # a key of TARGETS
    point: str                      # a key of POINTS
    expect: str                     # a key of EXPECTS
    exit_code: int                  # the run's exit as Popen reports it (-9: killed by SIGKILL); status/clean's
    exit_within: float              # seconds from the fault to the run's exit (status + clean's, without a run)
    pytest_args: tuple[str, ...] = ()
    point_timeout: float = 900      # seconds from the start to the point (a cluster of the host engine: ~80 s)
    hang_up_output: bool = False    # the run's output pipe is closed at the fault (the terminal is gone)
    tolerate: tuple[str, ...] = ()  # kinds of leftovers the expectation allows (why: `note`)
    ci: bool = False                # in the --ci subset
    note: str = ""                  # what happens, in words

    @property
    def signum(self) -> int | None:
        return int(getattr(signal, self.fault)) if self.fault.startswith("SIG") else None

    @property
    def needs_cluster(self) -> bool:
        return bool(self.pytest_args)


SCENARIOS = [
    Scenario("sigterm-during-create", "term-create", "SIGTERM", "controller", "kind-create-running", NOTHING_LEFT,
             exit_code=128 + signal.SIGTERM, exit_within=90, pytest_args=SMALL_RUN, point_timeout=300,
             tolerate=("run_dirs",), ci=True,
             note="the controller's handler stops kind, deletes the half-made cluster and exits 143; "
                  + ABORT_KEEPS_RUN_DIR),
    Scenario("sighup-during-test", "hup-test", "SIGHUP", "controller", "test-running", NOTHING_LEFT,
             exit_code=128 + signal.SIGHUP, exit_within=90, pytest_args=SMALL_RUN, hang_up_output=True,
             tolerate=("run_dirs",),
             note="the output pipe is closed first (a terminal that is gone): the clean-up's output goes to "
                  "runs/abort-<run>.log; the cluster is deleted, exit 129; " + ABORT_KEEPS_RUN_DIR),
    Scenario("sigint-during-test", "int-test", "SIGINT", "group", "test-running", NOTHING_LEFT,
             exit_code=2, exit_within=180, pytest_args=SMALL_RUN,
             note="pytest ends as interrupted (exit 2); sessionfinish exports kind logs and deletes the cluster"),
    Scenario("sigkill-during-create", "kill-create", "SIGKILL", "group", "kind-create-running", CLEAN_RECOVERS,
             exit_code=-signal.SIGKILL, exit_within=15, pytest_args=SMALL_RUN, point_timeout=300,
             note="nothing of the run can react: node containers, marker, kind config, guard rules and the run "
                  "directory stay until `svc-harness clean`"),
    Scenario("sigkill-during-test", "kill-test", "SIGKILL", "group", "test-running", CLEAN_RECOVERS,
             exit_code=-signal.SIGKILL, exit_within=15, pytest_args=SMALL_RUN, ci=True,
             note="a whole cluster (nodes, marker, kubeconfig), the guard rules and the run directory stay "
                  "until `svc-harness clean`"),
    Scenario("sigterm-worker-during-test", "term-worker", "SIGTERM", "worker", "test-running", NOTHING_LEFT,
             exit_code=1, exit_within=300, pytest_args=(*SMALL_RUN, "-n", "2"),
             note="xdist reports the worker's test as failed (worker crashed) and replaces the worker; the "
                  "controller ends the run as usual (kind logs exported) and deletes the cluster: exit 1"),
    Scenario("corrupt-marker", "marker", "corrupt marker", "markers", "markers-written", TOOLS_COPE,
             exit_code=0, exit_within=300, ci=True,
             note="payloads: " + ", ".join(GARBAGE)),
]
BY_NAME = {s.name: s for s in SCENARIOS}
CI = [s.name for s in SCENARIOS if s.ci]


def select(only: str = "", ci: bool = False) -> list[Scenario]:
    """The scenarios to run, in table order: --only names (comma-separated), or the --ci subset, or all.
    An unknown name is a ValueError naming the known ones."""
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; expected some of {', '.join(BY_NAME)}")
    wanted = set(names) or (set(CI) if ci else set(BY_NAME))
    if names and ci:
        wanted &= set(CI)
    return [s for s in SCENARIOS if s.name in wanted]


def cluster_prefix(s: Scenario, token: str | None = None) -> str:
    """fault-<tag>-<random>: unique to one run of the scenario, so its sweep touches nothing else."""
    return f"fault-{s.tag}-{token or secrets.token_hex(3)}"


def pytest_argv(s: Scenario, prefix: str, artifacts: Path, extra: list[str]) -> list[str]:
    """The scenario's run (started in the checkout: its paths are relative to it)."""
    return [sys.executable, "-m", "pytest", *s.pytest_args, f"--cluster-prefix={prefix}",
            f"--artifacts-dir={artifacts}", *extra]


def describe(s: Scenario) -> str:
    """One line of `--list`."""
    ci = " [ci]" if s.ci else ""
    run = " ".join(s.pytest_args) or "(no run)"
    return (f"{s.name}{ci}\n    {s.fault} -> {s.target} at {s.point}; expected: exit {s.exit_code}, {s.expect}\n"
            f"    run: {run}\n    {s.note}")
