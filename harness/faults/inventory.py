"""What a run left on this machine, told apart from what others hold.

A scenario's run is known by its cluster prefix (unique: fault-<tag>-<random>) and its run ids:
its containers (named after its clusters or carrying kind's label of one), its markers and kind
configs under clusters/, its kubeconfigs, its run directories (and abort logs) under runs/. The
host's guard rules are machine-wide: they count as left only while no harness container of anyone
else is on the kind network (then nothing may keep them there).
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .. import config, engine
from ..cluster import KindCluster
from ..owners import Owner, cluster_markers, read_json
from ..runner import DEFAULT, Runner

log = logging.getLogger(__name__)


class InventoryError(RuntimeError):
    pass


@dataclass
class Inventory:
    containers: list[str] = field(default_factory=list)         # the run's
    markers: list[str] = field(default_factory=list)            # clusters/<name>.json and .kind.yaml of its clusters
    kubeconfigs: list[str] = field(default_factory=list)        # kubeconfigs/<name>.yaml
    run_dirs: list[str] = field(default_factory=list)           # runs/<id> and runs/abort-<id>.log of its runs
    guard_rules: list[str] = field(default_factory=list)        # the host's guard lines (iptables-save, ip6tables-save)
    others_on_network: list[str] = field(default_factory=list)  # harness containers of other runs on the kind network


def leftovers(before: Inventory, after: Inventory) -> dict[str, list[str]]:
    """What the run left: what `after` holds of the run and `before` did not, by kind; the guard
    rules when no harness container of another run is on the kind network to keep them there."""
    out: dict[str, list[str]] = {}
    for kind in ("containers", "markers", "kubeconfigs", "run_dirs"):
        new = sorted(set(getattr(after, kind)) - set(getattr(before, kind)))
        if new:
            out[kind] = new
    if after.guard_rules and not after.others_on_network:
        out["guard_rules"] = list(after.guard_rules)
    return out


def judged(left: dict[str, list[str]], tolerate: tuple[str, ...]) -> dict[str, list[str]]:
    """The leftovers the expectation does not allow."""
    return {k: v for k, v in left.items() if k not in tolerate and v}


# ---------------------------------------------------------------- taking one
def take(prefix: str, run_ids: set[str], runner: Runner = DEFAULT) -> Inventory:
    """This machine now, as far as the run of `prefix` (with `run_ids`) is concerned."""
    # ignore_removed: containers of other runs come and go between the list and each inspect (the
    # SDK's default raises NotFound then; a first real run lost its inventory while a CI run deleted nodes).
    found = runner.engine("list every container", lambda c: [
        (x.name, x.labels, set((x.attrs.get("NetworkSettings") or {}).get("Networks") or {}))
        for x in c.containers.list(all=True, ignore_removed=True)], check=False, default=None)
    if found is None:
        raise InventoryError("the Docker engine does not answer: what is left cannot be told")
    containers = sorted(n for n, labels, _ in found if _mine(prefix, n)
                        or _mine(prefix, labels.get(config.KIND_CLUSTER_LABEL)))
    # What keeps the host's guard rules (engine.harness_containers' rule): nodes of a cluster with a
    # marker, containers with the harness's owner label; on the kind network, and not this run's.
    marked = {name for name, _ in cluster_markers()}
    others = sorted(n for n, labels, nets in found if config.KIND_NETWORK in nets and n not in containers and (
        labels.get(config.KIND_CLUSTER_LABEL) in marked or labels.get(config.OWNER_LABEL) in engine.CONTAINER_ROLES))
    runs = config.CACHE / "runs"
    return Inventory(
        containers=containers,
        markers=_names(config.CACHE / "clusters", prefix),
        kubeconfigs=_names(config.CACHE / "kubeconfigs", prefix),
        run_dirs=sorted(p.name for rid in run_ids for p in (runs / rid, runs / f"abort-{rid}.log") if p.exists()),
        guard_rules=engine.saved_rules(runner, (engine.GUARD_COMMENT, engine.DNS_COMMENT)),
        others_on_network=others)


def _mine(prefix: str, name: str | None) -> bool:
    return (name or "").startswith(f"{prefix}-")


def _names(directory: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in directory.glob(f"{prefix}-*"))


def cluster_names(prefix: str) -> list[str]:
    """The cluster names of `prefix` its files show (markers, kind configs, kubeconfigs; a name holds no dot)."""
    files = [*_names(config.CACHE / "clusters", prefix), *_names(config.CACHE / "kubeconfigs", prefix)]
    return sorted({f.split(".", 1)[0] for f in files})


def run_ids_of(owner: Owner, runs: Path | None = None) -> set[str]:
    """The run directories (under runs/) whose owner.json names `owner`: the run a controller made."""
    runs = runs or config.CACHE / "runs"
    return {d.name for d in runs.glob("*") if d.is_dir() and read_json(d / "owner.json") == owner.to_dict()}


# ---------------------------------------------------------------- processes of a run
def stat_fields(text: str) -> tuple[str, int, int]:
    """(state, ppid, pgrp) from the text of /proc/<pid>/stat (the command may hold spaces and parens)."""
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[2])


def processes(pgid: int) -> dict[int, int]:
    """Live processes of process group `pgid`: pid -> ppid (orphans keep their group: a `docker run`
    whose kind was killed is still found here)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid, pgrp = stat_fields(stat.read_text())
        except (OSError, IndexError, ValueError):
            continue
        if pgrp == pgid and state != "Z":
            out[int(stat.parent.name)] = ppid
    return out


def cmdline(pid: int) -> list[str]:
    try:
        return [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0") if a]
    except OSError:
        return []


def is_kind_create(argv: list[str], cluster: str) -> bool:
    """`kind create cluster ... --name <cluster> ...` (the harness's form, harness.cluster)."""
    if not argv or os.path.basename(argv[0]) != "kind" or argv[1:3] != ["create", "cluster"]:
        return False
    return any(a == "--name" and b == cluster for a, b in zip(argv, argv[1:])) or f"--name={cluster}" in argv


def holds_file(pid: int, suffix: str) -> bool:
    """Whether process `pid` has a file open whose path ends with `suffix`."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd).endswith(suffix):
                return True
        except OSError:
            continue
    return False


# ---------------------------------------------------------------- the plain kind cluster
def fingerprint(name: str, runner: Runner = DEFAULT) -> dict:
    """A kind cluster that is not the harness's, as the engine shows it: its containers (name, id,
    state, address on the kind network) and the kind network (id, subnets)."""
    def containers(c):
        out = []
        for x in c.containers.list(all=True, filters={"label": f"{config.KIND_CLUSTER_LABEL}={name}"},
                                   ignore_removed=True):
            net = (x.attrs.get("NetworkSettings", {}).get("Networks") or {}).get(config.KIND_NETWORK) or {}
            out.append([x.name, x.id[:12], x.status, net.get("IPAddress", "")])
        return sorted(out)
    net = runner.engine(f"inspect network {config.KIND_NETWORK}",
                        lambda c: c.networks.get(config.KIND_NETWORK).attrs, check=False, default=None) or {}
    return {"containers": runner.engine(f"list the containers of {name}", containers, check=False, default=None),
            "network": {"id": net.get("Id", ""),
                        "subnets": sorted(c["Subnet"] for c in (net.get("IPAM") or {}).get("Config") or []
                                          if c.get("Subnet"))}}


def fingerprint_changes(before: dict, after: dict) -> list[str]:
    """What differs between two fingerprints, in words (empty: unchanged)."""
    changes = []
    if after.get("containers") is None:
        changes.append("its containers could not be listed (the engine did not answer)")
    elif before.get("containers") != after.get("containers"):
        was = {c[0]: c for c in before.get("containers") or []}
        now = {c[0]: c for c in after["containers"]}
        changes += [f"container {n} gone" for n in sorted(set(was) - set(now))]
        changes += [f"container {n} new" for n in sorted(set(now) - set(was))]
        changes += [f"container {n}: {was[n][1:]} -> {now[n][1:]}" for n in sorted(set(was) & set(now))
                    if was[n] != now[n]]
    for key in ("id", "subnets"):
        b, a = before.get("network", {}).get(key), after.get("network", {}).get(key)
        if b != a:
            changes.append(f"kind network {key}: {b} -> {a}")
    return changes


# ---------------------------------------------------------------- the sweep
def sweep(prefix: str, run_ids: set[str], runner: Runner = DEFAULT) -> list[str]:
    """The bed never leaves its own run behind: remove whatever of `prefix` is still here, by the
    harness's own means first (a cluster with a marker: KindCluster.delete, which leaves a live
    owner's alone), then what only the unique prefix names (containers, files); the host's guard rules
    go if no harness container is left on the kind network. Returns what it removed."""
    removed = []
    for name in cluster_names(prefix):
        try:
            kc = KindCluster.ours(name)
            if kc.owned() and kc.delete():
                removed.append(f"cluster {name}")
        except Exception as e:  # noqa: BLE001 - a marker it cannot read (the corrupt-marker scenario)
            log.warning("sweep: deleting cluster %s the harness's way failed (%s); removing it by name", name, e)
    removed += [f"container {c}" for c in _remove_containers(prefix, runner)]
    for directory in ("clusters", "kubeconfigs"):
        for f in (config.CACHE / directory).glob(f"{prefix}-*"):
            f.unlink(missing_ok=True)
            removed.append(f"{directory}/{f.name}")
    for rid in run_ids:
        for p in (config.CACHE / "runs" / rid, config.CACHE / "runs" / f"abort-{rid}.log"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(f"runs/{p.name}")
            elif p.exists():
                p.unlink(missing_ok=True)
                removed.append(f"runs/{p.name}")
    # The guard rules are everyone's: touched only when this prefix had something left to remove.
    if removed and engine.of(runner).remove_guard_if_unused():
        removed.append("the host's guard rules")
    return removed


def _remove_containers(prefix: str, runner: Runner) -> list[str]:
    """Containers named after a cluster of `prefix` or carrying kind's label of one (nodes a killed
    create left without a marker; external clients). An engine that does not answer is an error."""
    import docker

    def remove(c) -> list[str]:
        gone = []
        for x in c.containers.list(all=True, ignore_removed=True):
            if _mine(prefix, x.name) or _mine(prefix, x.labels.get(config.KIND_CLUSTER_LABEL)):
                try:
                    x.remove(force=True, v=True)
                    gone.append(x.name)
                except docker.errors.NotFound:
                    pass
        return gone
    return runner.engine(f"remove the containers of {prefix}-*", remove, timeout=300)
