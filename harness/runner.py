"""The one seam through which the harness runs commands.

kind, docker, `docker exec` into nodes and `kubectl` all go through a Runner,
so every command is logged (DEBUG, pasteable into a shell), timed, and can be
replaced by `FakeRunner` in unit tests. Modelled on kind's exec.Cmder.
"""
from __future__ import annotations

import copy
import logging
import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

log = logging.getLogger(__name__)


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class CommandError(RuntimeError):
    """A command failed: says what ran, how it ended and the tail of its output."""

    def __init__(self, result: Result, what: str = ""):
        self.result = result
        tail = (result.stderr.strip() or result.stdout.strip())[-2000:]
        head = f"{what}: " if what else ""
        super().__init__(f"{head}command failed (exit {result.returncode} after "
                         f"{result.seconds:.1f}s): {shlex.join(result.argv)}\n{tail}")


class Runner:
    """Runs host commands. `check=True` raises CommandError on non-zero exit.

    A Runner may carry extra environment for every command, e.g. the
    DOCKER_HOST of a guest's Docker engine (harness.guest): docker and kind
    through it reach that engine. `where` names the engine for reports.
    """
    env: dict = {}
    where: str = "host"

    def on_engine(self, env: dict, where: str) -> "Runner":
        """A copy of this runner whose commands run with `env` (e.g. DOCKER_HOST)."""
        other = copy.copy(self)
        other.env = {**self.env, **env}
        other.where = where
        return other

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = 600,
            check: bool = True, env: dict | None = None, cwd: str | None = None,
            what: str = "") -> Result:
        argv = [str(a) for a in argv]
        prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in self.env.items())
        log.debug("$ %s%s", prefix, shlex.join(argv))
        started = time.monotonic()
        env = {**self.env, **(env or {})}
        full_env = {**os.environ, **env} if env else None
        try:
            p = subprocess.run(argv, input=input, capture_output=True, text=True,
                               timeout=timeout, env=full_env, cwd=cwd)
            res = Result(argv, p.returncode, p.stdout, p.stderr, time.monotonic() - started)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            res = Result(argv, 124, out, err + f"\n(timed out after {timeout}s)", time.monotonic() - started)
        except FileNotFoundError:
            res = Result(argv, 127, "", f"{argv[0]}: command not found", 0.0)
        log.debug("  -> exit %d in %.2fs", res.returncode, res.seconds)
        if check and not res.ok:
            raise CommandError(res, what)
        return res


@dataclass
class FakeRunner(Runner):
    """Records argv and answers from a script: [(predicate or argv-prefix, Result-ish)]."""
    responses: list = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)

    def on(self, prefix: Sequence[str] | Callable[[list[str]], bool], stdout: str = "",
           returncode: int = 0, stderr: str = "") -> "FakeRunner":
        self.responses.append((prefix, stdout, returncode, stderr))
        return self

    def run(self, argv, *, input=None, timeout=None, check=True, env=None, cwd=None, what=""):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        for prefix, stdout, rc, stderr in self.responses:
            hit = prefix(argv) if callable(prefix) else argv[:len(prefix)] == list(prefix)
            if hit:
                res = Result(argv, rc, stdout, stderr, 0.0)
                break
        else:
            res = Result(argv, 0, "", "", 0.0)
        if check and not res.ok:
            raise CommandError(res, what)
        return res


DEFAULT = Runner()


class Step:
    """A long step with a status line and its time: `with Step("building node image"):`.

    Logs at INFO (shown live under pytest via log_cli) and keeps the measured
    seconds for reports.
    """
    timings: dict[str, float] = {}

    def __init__(self, title: str):
        self.title = title
        self.seconds = 0.0

    def __enter__(self):
        self._t0 = time.monotonic()
        _status(f" • {self.title} ...")
        return self

    def __exit__(self, exc_type, exc, tb):
        self.seconds = time.monotonic() - self._t0
        Step.timings[self.title] = self.seconds
        mark = "✓" if exc_type is None else "✗"
        _status(f" {mark} {self.title} ({self.seconds:.1f}s)")
        return False


def _status(line: str) -> None:
    # Under pytest these show live through log_cli (see pyproject.toml).
    log.info(line.strip())
