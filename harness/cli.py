"""svc-harness: what the harness left on this machine (status), removing it (clean), and the tools.

    svc-harness status            clusters, their owners and engines; the guest and its holders;
                                  guard rules; the harness's containers; the guest link; cache
                                  sizes; run directories
    svc-harness clean [--force]   remove what the harness made and no live run uses: clusters with
                                  a harness marker, its containers, its guard rules, the guest and
                                  its link, stale run directories. Never anything without a marker
                                  or label of the harness (a plain `kind create cluster` stays).
    svc-harness guest|bench|breaks|byo|upstream|images|report|faults ...
                                  the `python -m harness.<tool>` commands
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from . import config
from .owners import Owner, cluster_markers, read_json

# subcommand -> the module whose main(argv) it runs
TOOLS = {"guest": "harness.guest.__main__", "bench": "harness.bench.__main__", "breaks": "harness.breaks",
         "byo": "harness.byo.testbed", "upstream": "harness.upstream.__main__", "images": "harness.images",
         "report": "harness.report", "faults": "harness.faults.__main__"}


def tool_prog(module_prog: str) -> str:
    """A tool's name in its usage lines: `svc-harness bench` when started so (main sets argv[0])."""
    return sys.argv[0] if sys.argv and sys.argv[0].startswith("svc-harness ") else module_prog


def add_kubernetes_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubernetes-version", metavar="MINOR", default=None,
                        help="Kubernetes release, e.g. 1.37 (as pytest's --kubernetes-version; default: "
                             "KUBERNETES_DEFAULT in images/versions.env)")


def use_kubernetes_version(parser: argparse.ArgumentParser, value: str | None) -> None:
    """--kubernetes-version as the release of everything this process and its children do (the
    variable pytest's option sets too); an unknown release is a usage error."""
    if value:
        try:
            os.environ[config.K8S_VERSION_ENV] = config.k8s_minor(value)
        except ValueError as e:
            parser.error(f"--kubernetes-version: {e}")


def parse_with_pytest_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The tool's own options, and pytest's after a `--` (passed on to the pytest runs the tool starts).
    An unknown option before `--` is a usage error, not silently handed to pytest."""
    argv = list(sys.argv[1:] if argv is None else argv)
    own, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args, unknown = parser.parse_known_args(own)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (pytest options go after `--`, "
                     f"e.g. `-- --lb-provider=none`)")
    return args, extra


def _age(t: float | None) -> str:
    if not t:
        return "?"
    s = time.time() - t
    return f"{s / 3600:.1f}h" if s > 3600 else f"{s / 60:.0f}m"


def _size(path) -> str:
    """Disk use of a directory tree (files as allocated: a sparse guest disk counts what it holds)."""
    total = 0
    for f in path.rglob("*"):
        try:
            if f.is_file() and not f.is_symlink():
                total += f.stat().st_blocks * 512
        except OSError:
            pass
    return f"{total / 2**30:.1f} GiB" if total >= 2**30 else f"{total / 2**20:.0f} MiB"


def status() -> int:
    from . import engine
    print("clusters with a harness marker (~/.cache/svc-harness/clusters):")
    markers = cluster_markers()
    if not markers:
        print("  (none)")
    for name, m in markers:
        if m is None:
            print(f"  {name}: its marker cannot be read (not a JSON object): `clean` removes it, and the "
                  f"cluster if kind has one by that name")
            continue
        owner = Owner.from_dict(m.get("owner"))
        state = ("owner running" if owner and owner.alive()
                 else "its owner cannot be read: `clean` removes it" if m.get("owner") and not owner
                 else "owner gone: `clean` removes it")
        print(f"  {name}: {m.get('mode', '?')} on {m.get('where') or m.get('engine', 'host')}, "
              f"age {_age(m.get('time'))}, {state} ({owner or 'no owner recorded'})")
    for eng in engine.every():
        for line in eng.status_lines():
            print(line)
    print(f"caches under {config.CACHE}:")
    for d in sorted(p for p in config.CACHE.iterdir() if p.is_dir()) if config.CACHE.exists() else []:
        print(f"  {d.name}: {_size(d)}")
    runs = sorted(r for r in (config.CACHE / "runs").glob("*") if r.is_dir())
    live = [r for r in runs if (o := Owner.from_dict(read_json(r / "owner.json"))) and o.alive()]
    print(f"run directories: {len(runs)} ({len(live)} of live runs)")
    for log_file in sorted((config.CACHE / "runs").glob("abort-*.log")):
        print(f"  abort log of a signalled run: {log_file} (`clean` removes it once that run is gone)")
    return 0


def stale_runs(runs: Path, force: bool) -> list[Path]:
    """Under `runs`: the directories of runs that are gone (all of them with `force`), and the abort
    log a signalled run leaves beside its directory (runs/abort-<id>.log), once that run is gone."""
    stale = []
    for run in sorted(runs.glob("*")):
        run_dir = run.with_name(run.name.removeprefix("abort-").removesuffix(".log")) if run.is_file() else run
        owner = Owner.from_dict(read_json(run_dir / "owner.json"))
        if force or not (owner and owner.alive()):
            stale.append(run)
    return stale


def clean(force: bool) -> int:
    """Remove what the harness made and no live run uses (`force`: live runs' too). Exit 1 when
    something it should have removed is still there; what a live run holds is kept and exits 0."""
    from . import engine
    from .cluster import KindCluster
    left = failed = 0
    for name, m in cluster_markers():
        unreadable, m = m is None, m or {}
        owner = Owner.from_dict(m.get("owner"))
        if owner and owner.alive() and not force:
            print(f"kept {name}: its run is still going ({owner})")
            left += 1
            continue
        kc = KindCluster.ours(name, owner if force else None)
        if force and owner:
            kc.owner = owner  # act as its owner
        if kc.engine.down_and_self_cleaning():
            kc.forget()
            print(f"forgot cluster {name}: its engine ({kc.engine.describe()}) is not running, and removes "
                  "its nodes when it next starts")
            continue
        engine.remove_containers(kc.runner, f"{config.OWNER_LABEL}=external-client", f"{name}-ext")
        if kc.delete():
            print(f"removed the unreadable marker of {name} (and its cluster, if kind had one)" if unreadable
                  else f"deleted cluster {name} ({m.get('where') or 'host engine'})")
        elif kc.owned() and kc.held_by_other():
            print(f"kept {name}: a run that is still going uses it")
            left += 1
        elif kc.owned():
            print(f"could not delete cluster {name}; its marker stays (see the log above)")
            failed += 1
    for eng in engine.every():
        lines, kept = eng.clean_up(force)
        for line in lines:
            print(line)
        left += kept
    for run in stale_runs(config.CACHE / "runs", force):
        if run.is_file():
            run.unlink(missing_ok=True)
        else:
            shutil.rmtree(run, ignore_errors=True)
    print("clean: nothing of the harness is left" if not left + failed else
          f"clean: {left} thing(s) kept for live runs, {failed} could not be removed (see above)")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOLS:
        tool = importlib.import_module(TOOLS[argv[0]])
        sys.argv = [f"svc-harness {argv[0]}", *argv[1:]]
        return tool.main(argv[1:])
    ap = argparse.ArgumentParser(prog="svc-harness", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["status", "clean", *TOOLS])
    ap.add_argument("--force", action="store_true", help="clean: also what live runs hold")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    return status() if a.command == "status" else clean(a.force)


if __name__ == "__main__":
    sys.exit(main())
