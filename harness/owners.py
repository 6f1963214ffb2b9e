"""Who owns what the harness leaves on this machine, machine-wide leases, and atomic state writes.

An owner is a process told apart from any later process with the same pid: its
pid, its start time (from /proc/<pid>/stat) and the boot it started in. Cluster
markers and guest leases record one, so a live owner's cluster is never taken
for stale, a dead owner's always is, and a pid reused after a crash or a reboot
is not mistaken for the owner.

A Leases directory holds one file per holder of a machine-wide resource (the
UML guest); decisions about it (boot it, halt it) are taken behind its lock,
and dead holders are pruned on every look.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat (clock ticks after boot); "" if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


@dataclass(frozen=True)
class Owner:
    pid: int
    start: str
    boot: str

    @classmethod
    def of(cls, pid: int | None = None) -> "Owner":
        pid = pid or os.getpid()
        return cls(pid, _start_time(pid), _boot_id())

    @classmethod
    def from_dict(cls, d: dict | None) -> "Owner | None":
        try:
            return cls(int(d["pid"]), str(d["start"]), str(d["boot"]))
        except (TypeError, KeyError, ValueError):
            return None

    def to_dict(self) -> dict:
        return asdict(self)

    def alive(self) -> bool:
        return bool(self.start) and self.boot == _boot_id() and _start_time(self.pid) == self.start

    def __str__(self) -> str:
        return f"pid {self.pid}" + ("" if self.alive() else " (gone)")


OWNER_ENV = "SVC_HARNESS_OWNER"  # a tool that runs pytest several times on one kept cluster owns it


def owner_env() -> dict:
    """Environment for pytest runs a tool starts: their clusters belong to the tool, which outlives
    each run (so a kept cluster between two runs is not taken for a dead run's)."""
    return {OWNER_ENV: json.dumps(Owner.of().to_dict())}


def controller_owner() -> Owner:
    """The owner a pytest controller records for its run: the tool that started it, or itself."""
    try:
        inherited = Owner.from_dict(json.loads(os.environ.get(OWNER_ENV, "")))
    except ValueError:
        inherited = None
    return inherited if inherited and inherited.alive() else Owner.of()


def run_owner(run_dir: Path | None) -> Owner:
    """The owner of everything a run makes: its controller (written to the run directory at the start,
    read by xdist workers), or this process outside a pytest run."""
    if run_dir is not None:
        found = Owner.from_dict(read_json(run_dir / "owner.json"))
        if found:
            return found
    return Owner.of()


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`; None when it is missing, unreadable or holds anything but an object
    (a marker cut short or overwritten by hand must not crash `status`, `clean` or a later run)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def cluster_markers() -> list[tuple[str, dict | None]]:
    """(cluster name, its ownership marker) for every cluster the harness has a marker of; None for
    a marker that is not a JSON object (cut short, overwritten)."""
    from . import config
    return [(p.stem, read_json(p)) for p in sorted((config.CACHE / "clusters").glob("*.json"))]


def write_json(path: Path, data) -> None:
    """Atomically: a reader sees the old file or the new one, never half of it."""
    write_text(path, json.dumps(data))


def write_text(path: Path, text: str) -> None:
    """Atomically (temp file + rename in the same directory): a write cut short leaves the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def move_into(src: Path, dst: Path) -> None:
    """Move a file into place atomically, also from another filesystem (copy next to `dst`, rename)."""
    import shutil
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)
    Path(src).unlink(missing_ok=True)


class Leases:
    """Holders of one machine-wide resource: a file per holder under `directory`."""

    def __init__(self, directory: Path):
        self.dir = directory

    @contextlib.contextmanager
    def locked(self, timeout: float = 3600):
        """Decisions about the resource (start it, stop it) are taken by one holder at a time."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.dir / ".lock"), timeout=timeout):
            yield self

    def add(self, key: str, owner: Owner) -> None:
        write_json(self.dir / f"{key}.json", owner.to_dict())

    def remove(self, key: str) -> None:
        (self.dir / f"{key}.json").unlink(missing_ok=True)

    def live(self) -> dict[str, Owner]:
        """Live holders by key; the files of dead ones are removed."""
        out = {}
        for f in sorted(self.dir.glob("*.json")):
            owner = Owner.from_dict(read_json(f))
            if owner and owner.alive():
                out[f.stem] = owner
            else:
                f.unlink(missing_ok=True)
        return out
