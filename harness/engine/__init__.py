"""Docker engines that run kind nodes, and the one place that picks one per mode.

  base      the Engine interface, HostEngine, the kind network helpers, the host's egress guard
  (the UML guest's engine is harness.guest.engine.GuestEngine)

Nothing outside this package and harness.guest branches on which engine a cluster uses: callers
ask the Engine (its runner, shape, slowdown, guard, API addresses).
"""
from __future__ import annotations

import os

from .. import config
from ..runner import DEFAULT, Runner
from .base import *  # noqa: F401,F403 - the package's public names
from .base import GUARD_COMMENT, Engine, HostEngine, ipvs_missing_reason  # noqa: F401 - named for readers


def _guest_engine(**kw) -> Engine:
    # Imported here: harness.guest.engine builds on .base, and this package must load without it.
    from ..guest.engine import GuestEngine
    return GuestEngine(**kw)


def choose(mode: str, preference: str = "auto", guest_workers: int = 1, every_mode_in_guest: bool = False,
           slot: int = 0, guests: int = 1) -> Engine:
    """The engine a mode's clusters run on: the one place that decides.

    Only ipvs needs more than the host has: with preference "auto" it runs in the UML guest
    (harness.guest) when the host kernel lacks IPVS; "host" forbids the guest, "guest" asks for it.
    `guest_workers`: the size of a cluster in the guest (--guest-worker-nodes).
    `every_mode_in_guest` (--all-modes-in-guest): iptables and nftables in the guest too, so the
    three modes can be compared on one kernel and one engine.
    `slot` of `guests` (guest_slots): a guest runs one CPU, so each xdist worker of a run gets a
    guest of its own, guest `slot`; with several, each gets less memory.
    """
    def guest() -> Engine:
        return _guest_engine(workers=guest_workers, index=slot, mem="" if guests <= 1 else GUEST_MEM_SHARED)

    if every_mode_in_guest:
        if preference == "host":
            raise ValueError("--all-modes-in-guest contradicts --ipvs-engine=host")
        return guest()
    if mode != "ipvs":
        return HostEngine()
    if preference == "guest" or (preference == "auto" and ipvs_missing_reason()):
        return guest()
    return _HostOnly() if preference == "host" else HostEngine()


# With several guests at once, each one's memory (a file in /dev/shm that fills as the guest
# uses it) is kept to what a 2-node cluster needs (~4 GB seen) plus room, so two fit beside the
# host's clusters in this machine's 24 GiB.
GUEST_MEM_SHARED = "7G"


def cluster_suffix(slot: int) -> str:
    """Appended to a run's cluster name in guest `slot` > 0: each guest's cluster of a mode is its own."""
    return f"-g{slot + 1}" if slot else ""


def guest_slots(requested: int | str, workers: int, worker: str) -> tuple[int, int]:
    """(this worker's guest, how many guests the run uses) for --guests.

    `requested`: a number, or "auto" = one per xdist worker, at most one per host CPU (a guest
    runs one CPU); `workers`: the run's xdist worker count (0 without xdist); `worker`: this
    process's worker id ("gw1") or "main"."""
    from ..guest.vm import MAX_GUESTS
    if requested == "auto":
        count = max(1, min(workers or 1, os.cpu_count() or 1))
    else:
        count = int(requested)
        if not 1 <= count <= MAX_GUESTS:
            raise ValueError(f"--guests must be 1..{MAX_GUESTS} or auto, got {requested}")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    return index % count, count


def guest_number(text: str) -> int:
    """A tool's --guest N: which guest, numbered as `harness.guest up --guests` boots them (0 first)."""
    from ..guest.vm import MAX_GUESTS
    if not text.isdigit() or not int(text) < MAX_GUESTS:
        raise ValueError(f"a guest number 0..{MAX_GUESTS - 1}, got {text!r}")
    return int(text)


class _HostOnly(HostEngine):
    """ipvs with --ipvs-engine=host: the host engine, and the preflight says why it cannot run."""

    def unavailable_reason(self, mode: str) -> str | None:
        missing = super().unavailable_reason(mode)
        return f"{missing} (--ipvs-engine=host forbids the UML guest engine)" if missing else None


def every() -> list[Engine]:
    """Every engine the harness can use on this machine (`svc-harness status` and `clean`): the
    host's, guest 0, and any other guest that runs or has a disk."""
    from ..guest import vm
    extra = [i for i in range(1, vm.MAX_GUESTS) if vm.Guest(vm.GuestConfig(index=i)).known()]
    return [HostEngine(), *(_guest_engine(index=i) for i in (0, *extra))]


def from_marker(marker: dict | None) -> Engine:
    """The engine a cluster of ours was created on, from its ownership marker."""
    marker = marker or {}
    if marker.get("engine") == "guest" or marker.get("engine_env"):
        return _guest_engine(index=int(marker.get("index", 0)))
    return HostEngine()


def of(runner: Runner) -> Engine:
    """The engine a runner reaches (Runner.on_engine names it; a guest's by its DOCKER_HOST)."""
    if runner.where != "host":
        from ..guest.vm import Link
        return _guest_engine(runner=runner, index=Link.of_docker_host(runner.env.get("DOCKER_HOST", "")).index)
    return HostEngine(runner)


def mode_unavailable_reason(mode: str, ipvs_engine: str = "auto", every_mode_in_guest: bool = False) -> str | None:
    """The preflight: why kube-proxy cannot run in `mode` on this machine, or None if it can."""
    return choose(mode, ipvs_engine, every_mode_in_guest=every_mode_in_guest).unavailable_reason(mode)


def ensure_egress_guard(runner: Runner = DEFAULT, network: str = config.KIND_NETWORK) -> str:
    """Install (once) and verify the egress guard of the engine `runner` reaches; the rule as text."""
    return of(runner).ensure_guard(network)


def check_egress_guard(runner: Runner = DEFAULT, network: str = config.KIND_NETWORK) -> None:
    """Refuse to send traffic unless the engine's egress guard is in place."""
    of(runner).check_guard(network)


def egress_drops(runner: Runner = DEFAULT, comment: str = GUARD_COMMENT) -> int:
    """Packets a guard rule has stopped so far (the egress guard's should stay 0)."""
    return of(runner).guard_drops(comment)
