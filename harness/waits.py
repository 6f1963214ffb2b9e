"""Waiting that explains itself.

A Wait polls a probe function until a condition holds on what it returns. On
timeout it raises WaitTimeout naming what it waited for and the last thing it
saw, so a red test says "expected endpoints {a,b,c}, last saw {a,b}" instead of
"timed out".

    Wait("endpoints of demoapp-svc == ready pods", timeout=60).until(
        lambda: endpoint_ips(...), lambda seen: seen == want)
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from typing import Any, Callable

from . import config

log = logging.getLogger(__name__)

# How much slower than the host the cluster in use is (its Engine's slowdown): set around a test
# or a cluster's creation with `slower(...)`, so host clusters in the same process keep their pace.
_SLOWDOWN: contextvars.ContextVar[float] = contextvars.ContextVar("svc_harness_slowdown", default=1.0)


@contextlib.contextmanager
def slower(factor: float):
    """Every Wait made inside this block waits `factor` times longer."""
    token = _SLOWDOWN.set(factor)
    try:
        yield
    finally:
        _SLOWDOWN.reset(token)


def slowdown() -> float:
    """How much slower than the host the cluster in use is (the user's factor times the engine's)."""
    return config.slowdown() * _SLOWDOWN.get()


def scaled(seconds: float) -> int:
    """A timeout handed to a tool (kubectl's --timeout), scaled like every Wait's."""
    return int(seconds * slowdown())


PROGRESS_EVERY = 30  # seconds between a long wait's progress lines


def max_interval(interval: float) -> float:
    """How far a long wait's pause between polls may grow from `interval`. On the host it does not
    grow. On a slow engine a poll (a `docker exec`, a `kubectl exec`) costs the cluster that much
    more of the CPU its own work needs: in the UML guest one `docker exec` into a node took 0.7-1.1 s
    while kube-proxy's sync waited for the same CPU, so long waits back off to 2 x slowdown x interval."""
    factor = slowdown()
    return interval if factor <= 1 else interval * 2 * factor


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class WaitTimeout(AssertionError):
    """A condition did not hold in time; carries the last observation."""

    def __init__(self, what: str, timeout: float, last: Any, error: Exception | None):
        self.what, self.last = what, last
        msg = f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}"
        if error is not None:
            msg += f"; last error: {error}"
        super().__init__(msg)


class Wait:
    def __init__(self, what: str, timeout: float = config.ENDPOINTS_TIMEOUT,
                 interval: float = config.POLL_INTERVAL,
                 transient: tuple[type[Exception], ...] = (Exception,)):
        self.what, self.interval, self.transient = what, interval, transient
        self.timeout = timeout * slowdown()  # a slow engine (the UML guest) waits longer
        self.max_interval = max_interval(interval)

    def until(self, observe: Callable[[], Any], ok: Callable[[Any], bool] = bool) -> Any:
        """Call observe() until ok(result); return the result that satisfied it."""
        deadline = time.monotonic() + self.timeout
        last, error = None, None
        started = time.monotonic()
        next_note = started + PROGRESS_EVERY
        pause = self.interval
        while True:
            try:
                last = observe()
                error = None
                if ok(last):
                    log.debug("%s: done after %.1fs", self.what, time.monotonic() - started)
                    return last
            except self.transient as e:  # "not yet": e.g. object not created yet
                error = e
            now = time.monotonic()
            if now >= deadline:
                raise WaitTimeout(self.what, self.timeout, last, error)
            if now >= next_note:  # a long wait says what it is waiting for, and what it sees
                from . import progress
                progress.emit(f"still waiting for {self.what}: {now - started:.0f}s of {self.timeout:.0f}s; "
                              f"last seen: {_short(last if error is None else error)}")
                next_note = now + PROGRESS_EVERY
            time.sleep(min(pause, max(0.0, deadline - now)))
            pause = min(pause * 1.5, self.max_interval)
