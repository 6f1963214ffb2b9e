"""Live progress of long steps, also from xdist workers.

pytest-xdist shows nothing a worker logs, so under `-n 2` a 5-minute cluster
creation would be silent. Every progress line (a Step starting or ending, a
phase of `kind create`, a long wait still waiting) is logged as usual and, in
a worker, also appended to the run's progress file; the controller's `Tailer`
prints the new lines of that file as they come, prefixed with the worker id.
`-q` turns the tail off; the file stays in the run's artifacts.

Every Step's time also goes to the run's steps file (any process of the run), from which
the controller prints a timing table at the end (`step_table`) and saves it as steps.md.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger("harness.progress")

ENV = "SVC_HARNESS_PROGRESS"   # the progress file; set by the controller for its workers
STEPS_ENV = "SVC_HARNESS_STEPS"  # the steps file (JSON lines); set by the controller for the whole run
TABLE_MIN_S = 5.0              # shorter steps stay out of the table


def emit(line: str) -> None:
    """One progress line: logged, and shared with the controller when this is an xdist worker."""
    log.info(line)
    path, worker = os.environ.get(ENV), os.environ.get("PYTEST_XDIST_WORKER")
    if path and worker:
        try:
            with open(path, "a") as f:
                f.write(f"{time.strftime('%H:%M:%S')} [{worker}] {line}\n")
        except OSError:
            pass  # progress is a courtesy; it never fails a run


def record_step(title: str, seconds: float, ok: bool) -> None:
    """A finished Step, for the run's timing table (only inside a run that asked for one)."""
    path = os.environ.get(STEPS_ENV)
    if not path:
        return
    rec = {"title": title, "seconds": round(seconds, 1), "ok": ok, "end": time.time(),
           "who": os.environ.get("PYTEST_XDIST_WORKER", "main")}
    try:
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")
    except OSError:
        pass  # like progress lines: never fails a run


def step_table(path: Path, min_seconds: float = TABLE_MIN_S) -> list[str]:
    """The run's steps of at least `min_seconds`, in the order they ended, as a Markdown table."""
    try:
        recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []
    recs = [r for r in recs if r["seconds"] >= min_seconds]
    if not recs:
        return []
    rows = [f"| {time.strftime('%H:%M:%S', time.localtime(r['end']))} | {r['who']} | {r['title']} | "
            f"{r['seconds']:.0f} s | {'ok' if r['ok'] else 'FAILED'} |" for r in sorted(recs, key=lambda r: r["end"])]
    return ["| ended | where | step | time | |", "|---|---|---|---|---|", *rows]


class Tailer:
    """Controller side: a thread that writes each new line of the progress file."""

    def __init__(self, path: Path, write: Callable[[str], None], interval: float = 0.5):
        self.path, self.write, self.interval = path, write, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="svc-harness-progress", daemon=True)

    def start(self) -> "Tailer":
        self.path.touch()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        with open(self.path) as f:
            while True:
                line = f.readline()
                if line:
                    self.write(line.rstrip("\n"))
                    continue
                if self._stop.wait(self.interval):
                    return
