"""Fault injection on real harness runs: signals at chosen points, a corrupt marker; what is left
on this machine, and how `svc-harness clean` recovers.

    python -m harness.faults --list                 # the scenarios and what each expects
    python -m harness.faults --ci                   # CI's subset (two runs that make a cluster, one without)
    python -m harness.faults --only=sigkill-during-test -- --worker-nodes=1

Each scenario runs `pytest suites/test_cluster.py --experiments=E00` (one iptables cluster) under a
cluster prefix of its own, waits for its point, sends its fault and records the exit, the time
from the fault to the exit, what was left (containers, markers, kubeconfigs, guard rules, run
directories), whether `svc-harness clean` was needed, its time and what it left. Writes
<artifacts-dir>/results.md and results.json; exit 0 only if every scenario is green. Needs root
(like the harness: the guard rules are read with iptables-save) and the harness's node image.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from ..cli import add_kubernetes_version, parse_with_pytest_args, tool_prog, use_kubernetes_version
from . import scenarios


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=tool_prog("python -m harness.faults"), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="list the scenarios and what each expects, run nothing")
    p.add_argument("--only", default="", metavar="NAME,...", help="run only these scenarios (default: all)")
    p.add_argument("--ci", action="store_true", help=f"CI's subset: {', '.join(scenarios.CI)}")
    p.add_argument("--artifacts-dir", default="artifacts/faults")
    p.add_argument("--with-plain-kind-cluster", action="store_true",
                   help=f"make a plain `kind create cluster --name faults-plain` first; after every scenario its "
                        "containers and the kind network (id, subnet) must be unchanged; deleted at the end")
    add_kubernetes_version(p)
    return p


def _interrupt(signum, frame):
    # SIGTERM or SIGHUP unwinds like Ctrl-C: the scenario's run is stopped and its prefix swept.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = parse_with_pytest_args(p, argv)
    try:
        chosen = scenarios.select(args.only, args.ci)
    except ValueError as e:
        p.error(str(e))
    if args.list:
        for s in chosen:
            print(scenarios.describe(s))
        return 0
    if not chosen:
        p.error(f"--only={args.only} with --ci leaves no scenario (CI's: {', '.join(scenarios.CI)})")
    use_kubernetes_version(p, args.kubernetes_version)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    # Runs must meet SIGINT as a terminal's Ctrl-C: a shell starts background commands with SIGINT
    # ignored, and an ignored signal stays ignored across exec; a handled one is reset in each child.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from . import bed  # docker, kind and the cluster code only when something runs
    return bed.run_all(chosen, Path(args.artifacts_dir).resolve(), extra, args.with_plain_kind_cluster)


if __name__ == "__main__":
    sys.exit(main())
