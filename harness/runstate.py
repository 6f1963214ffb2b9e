"""What one pytest run keeps: between its hooks, in pytest's own per-run store (config.stash),
and across its xdist workers, in the run directory (run_once)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock, Timeout

from .owners import read_json, write_json


@dataclass
class RunState:
    run_dir: Path | None = None           # shared by the controller and its xdist workers
    started: float | None = None          # time.monotonic() at session start (controller)
    gate: Any = None                      # gate.Gate of the controller
    tailer: Any = None                    # progress.Tailer showing the workers' progress (controller)
    upstream_specs: list = field(default_factory=list)  # --upstream-conformance: specs to run
    usage_error: str = ""                 # a worker found an unknown --experiments id
    summary: list[str] = field(default_factory=list)      # the run summary's lines
    byo: Any = None                       # --byo-kubeconfig: byo.discover.Preflight
    byo_before: Any = None                # --byo-kubeconfig: the snapshot before the run
    byo_drops_before: int = 0             # --byo-kubeconfig: the egress guard's drop counter before
    byo_summary: list[str] = field(default_factory=list)


_KEY = pytest.StashKey[RunState]()


def of(config: pytest.Config) -> RunState:
    """This run's state (made on first use)."""
    return config.stash.setdefault(_KEY, RunState())


class OnceError(RuntimeError):
    """Work done once per run failed; every later caller sees its error."""


def run_once(run_dir: Path, key: str, fn, meanwhile=None) -> dict:
    """Do `fn()` once per run, behind a lock: the first caller (any xdist worker) runs it and
    records its JSON result, later callers read that; if it failed, they fail with its error.
    `meanwhile()` runs first when another caller holds the lock (is doing `fn` right now)."""
    state_file = run_dir / f"{key}.json"
    lock = FileLock(str(run_dir / f"{key}.lock"))
    try:
        lock.acquire(timeout=0 if meanwhile else -1)
    except Timeout:
        meanwhile()
        lock.acquire()
    try:
        state = read_json(state_file)
        if state is None:
            try:
                state = fn()
            except Exception as e:
                write_json(state_file, {"error": str(e)})
                raise
            write_json(state_file, state)
    finally:
        lock.release()
    if state.get("error"):
        raise OnceError(f"{key} failed earlier in this run:\n{state['error']}")
    return state


def in_progress(run_dir: Path, key: str) -> bool:
    """Is another process doing `key`'s run_once work right now (its lock held, no result yet)?"""
    if (run_dir / f"{key}.json").exists():
        return False
    lock = FileLock(str(run_dir / f"{key}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False
