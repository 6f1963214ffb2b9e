"""Per-run cluster sharing: one cluster per mode, created once, deleted once.

The run directory (CACHE/runs/<id>) is shared by the controller and every
xdist worker. Under a file lock per cluster, the first worker that needs a
mode creates the cluster and writes its state; the others read it. Names of
clusters this run created are appended to `created` *before* creation starts,
so the controller can delete even a half-made cluster after Ctrl-C.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from . import assembly, config, engine, runstate
from .cluster import KindCluster, claim_name
from .kube import Kube
from .lab import ClusterHandle
from .owners import read_json, run_owner
from .runner import DEFAULT, Runner

log = logging.getLogger(__name__)


def cluster_name(opts, mode: str) -> str:
    return f"{opts.cluster_prefix}-{mode}"


def acquire(pyconfig: pytest.Config, mode: str, run_modes: list[str] = ()) -> ClusterHandle:
    """This mode's cluster, made by the first worker that needs it; `run_modes`: the run's modes in
    the order its tests use them (see _make_next_meanwhile)."""
    opts = pyconfig.option
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    if opts.byo_kubeconfig:
        _, images, _ = assembly.resolve_images(opts.node_image, opts.demo_image)
        from .byo import attach
        return attach.attach(pyconfig, images, worker)
    slot, guests = guest_slot(opts, worker)
    eng = _engine_for(opts, mode, slot, guests)
    reason = eng.unavailable_reason(mode)
    if reason:  # only reached with --skip-unavailable-modes; otherwise the run stopped at configure
        pytest.skip(reason)
    run_dir: Path = runstate.of(pyconfig).run_dir
    try:
        state = runstate.run_once(run_dir, f"cluster-{mode}{eng.cluster_suffix}", lambda: _make(pyconfig, mode, eng),
                                  meanwhile=lambda: _make_next_meanwhile(pyconfig, mode, list(run_modes), slot, guests))
    except runstate.OnceError as e:
        pytest.fail(str(e), pytrace=False)
    kc = KindCluster.ours(state["name"], run_owner(run_dir))
    _, images, _ = assembly.resolve_images(opts.node_image, opts.demo_image)
    return ClusterHandle(mode=mode, name=state["name"], kube=Kube(state["kubeconfig"]), nodes=kc.nodes(),
                         images=images, kind=kc, external_mode=opts.external_client, worker=worker,
                         lb_provider=state.get("lb", "none"), breaks=opts.breaks, runner=kc.runner,
                         engine_note=_engine_note(state), slowdown=kc.engine.slowdown,
                         expected_nodes=state.get("nodes", opts.worker_nodes + 1),
                         part=(slot, guests) if eng.per_slot and _xdist_workers() > 1 else (0, 1))


def _engine_for(opts, mode: str, slot: int, guests: int) -> engine.Engine:
    return engine.choose(mode, opts.ipvs_engine, opts.guest_worker_nodes, opts.all_modes_in_guest, slot, guests)


def _make(pyconfig: pytest.Config, mode: str, eng: engine.Engine) -> dict:
    """Create (or reuse) the mode's cluster on `eng`; the state every worker reads."""
    opts = pyconfig.option
    run_dir: Path = runstate.of(pyconfig).run_dir
    owner = run_owner(run_dir)
    _record_engine(run_dir, eng)  # before its lease is taken: the run's end releases it, even after a failure
    drops_before = eng.guard_counters()
    name = claim_name(cluster_name(opts, mode) + eng.cluster_suffix, owner, eng)
    out = assembly.build(assembly.Recipe(
        name=name, mode=mode, engine=eng, owner=owner, run_key=run_dir.name,
        workers=opts.worker_nodes,
        node_image=opts.node_image or "", demo_image=opts.demo_image or "",
        kube_proxy_extra=opts.kube_proxy_config or {}, breaks=opts.breaks, reuse=opts.reuse_clusters,
        lb_provider=opts.lb_provider), on_created=lambda n: record_created(run_dir, n))
    return {"name": name, "kubeconfig": str(out.kind.kubeconfig), "create_seconds": out.kind.create_seconds,
            "node_image": out.node_image, "lb": out.lb, "reused": not out.kind.created,
            "where": eng.describe(), "engine": eng.marker(), "nodes": out.nodes, "size_note": out.size_note,
            "loads": out.loads, "timings": out.timings, "drops_before": drops_before,
            "kubernetes": config.versions()["KUBERNETES_VERSION"], "kubelet": out.kind.kubelet}


def _make_next_meanwhile(pyconfig: pytest.Config, mode: str, run_modes: list[str], slot: int, guests: int) -> None:
    """Another worker is making `mode`'s cluster: rather than wait for it, make the cluster of the
    run's next mode that nobody has started (on an engine the workers share), so the two creations
    overlap instead of following each other. A failure is that mode's tests' error, not this one's."""
    opts = pyconfig.option
    run_dir: Path = runstate.of(pyconfig).run_dir
    later = run_modes[run_modes.index(mode) + 1:] if mode in run_modes else []
    for nxt in later:
        eng = _engine_for(opts, nxt, slot, guests)
        key = f"cluster-{nxt}{eng.cluster_suffix}"
        if eng.per_slot or eng.unavailable_reason(nxt) or runstate.in_progress(run_dir, key) \
                or (run_dir / f"{key}.json").exists():
            continue
        log.info("another worker makes the %s cluster; this one makes the %s cluster meanwhile", mode, nxt)
        try:
            runstate.run_once(run_dir, key, lambda: _make(pyconfig, nxt, eng))
        except Exception as e:  # noqa: BLE001 - recorded by run_once for the tests of that mode
            log.warning("making the %s cluster ahead failed (its tests will say so): %s", nxt, e)
        return


def guest_slot(opts, worker: str) -> tuple[int, int]:
    """(this worker's guest, the run's number of guests) for --guests (engine.guest_slots)."""
    try:
        slot, guests = engine.guest_slots(opts.guests, _xdist_workers(), worker)
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    if opts.guest_slot is None:
        return slot, guests
    if not 0 <= opts.guest_slot < guests:
        raise pytest.UsageError(f"--guest-slot={opts.guest_slot}: must be 0 .. {guests - 1} (--guests={opts.guests})")
    return opts.guest_slot, guests


def _xdist_workers() -> int:
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))


def _record_engine(run_dir: Path, eng: engine.Engine) -> None:
    with open(run_dir / "engines", "a") as f:
        f.write(json.dumps(eng.marker(), sort_keys=True) + "\n")


def _engines_used(run_dir: Path | None) -> dict[str, engine.Engine]:
    """The engines this run took a lease on (or used), by their marker."""
    f = run_dir / "engines" if run_dir else None
    lines = f.read_text().splitlines() if f and f.exists() else []
    return {line: engine.from_marker(json.loads(line)) for line in dict.fromkeys(lines)}


def record_created(run_dir: Path, name: str) -> None:
    """Before kind starts: the controller deletes even a half-made cluster after Ctrl-C."""
    with open(run_dir / "created", "a") as f:
        f.write(name + "\n")


def _engine_note(state: dict) -> str:
    """e.g. "host engine (kernel 6.x), 3 nodes" or "guest ... (UML, 7.2.13), 2 nodes — why"."""
    note = f"{state.get('where', '?')}, {state.get('nodes', '?')} nodes"
    if state.get("kubernetes"):
        note += f", Kubernetes {state['kubernetes']}"
    if state.get("kubelet"):
        note += f" (kubelet {state['kubelet']}: the engine runs cgroup v1)"
    return note + (f" — {state['size_note']}" if state.get("size_note") else "")


def finish_run(pyconfig: pytest.Config, failed: bool, gate=None) -> None:
    """Controller only: export logs on failure, delete what this run created, write the report."""
    opts = pyconfig.option
    run_dir: Path = runstate.of(pyconfig).run_dir
    summary: list[str] = []
    artifacts_dir = Path(opts.artifacts_dir)
    created = []
    if run_dir and (run_dir / "created").exists():
        created = list(dict.fromkeys((run_dir / "created").read_text().split()))
    states = {st["name"]: st for st in (read_json(f) for f in (run_dir.glob("cluster-*.json") if run_dir else []))
              if st and "name" in st}
    owner = run_owner(run_dir) if run_dir else None
    engines_used = _engines_used(run_dir)
    for name in created:
        state = states.get(name, {})
        kc = KindCluster.ours(name, owner)
        runner = kc.runner
        if "create_seconds" in state:
            how = "reused" if state.get("reused") else f"created in {state['create_seconds']:.1f}s"
            size = f"{state.get('nodes')} nodes" + (f" — {state['size_note']}" if state.get("size_note") else "")
            summary.append(f"svc-harness: cluster {name} {how} on the {state.get('where', 'host')} engine, {size} "
                           f"(node image {state['node_image']}, LoadBalancer provider: {state.get('lb')})")
        if failed:
            from . import artifacts
            artifacts.export_kind_logs(artifacts_dir / "kind-logs", name, runner)
        if state.get("loads"):
            summary.append(f"svc-harness: image loads into {state['where']}: "
                           + ", ".join(f"{t} {sec:.0f}s" for t, sec in state["loads"].items()))
        if state.get("timings"):
            summary.append(f"svc-harness: cluster {name} assembly: "
                           + ", ".join(f"{k} {v:.0f}s" for k, v in state["timings"].items()))
        _remove_external_clients(name, runner)
        if opts.keep_clusters:
            if kc.exists():
                summary.append(f"svc-harness: kept cluster {name}; kubeconfig: {state.get('kubeconfig')}")
        else:
            kc.delete()
    before: dict[str, list[int]] = {}  # per engine: its counters before this run's first cluster on it
    for st in states.values():
        key = json.dumps(st.get("engine") or {}, sort_keys=True)
        if st.get("drops_before"):
            before[key] = [min(a, b) for a, b in zip(before.get(key, st["drops_before"]), st["drops_before"])]
    for key, eng in engines_used.items():
        summary.append(eng.guard_report(before.get(key, [])))
        summary += eng.release(run_dir.name, keep=opts.keep_clusters)
    from . import report
    used = bool(list(artifacts_dir.glob("evidence-*.jsonl")) or list(artifacts_dir.glob("upstream-*.jsonl"))
                or (gate is not None and gate.verdicts()))
    if used:
        md, js = report.write_report(artifacts_dir, gate)
        summary.append(f"svc-harness: report {md} (+ {js.name})")
    started = runstate.of(pyconfig).started
    if started and (used or created):  # quiet in runs that used nothing of the harness (unit tests)
        summary.append(f"svc-harness: run time {time.monotonic() - started:.0f}s "
                       f"(modes: {', '.join(opts.proxy_modes)})")
    if run_dir and (used or created):
        from .progress import step_table
        table = step_table(run_dir / "steps.jsonl")
        if table:
            artifacts_dir.mkdir(parents=True, exist_ok=True)
            (artifacts_dir / "steps.md").write_text("# Steps of the run\n\n" + "\n".join(table) + "\n")
            summary += ["svc-harness: steps of the run (5 s or longer):", *(f"  {line}" for line in table)]
    runstate.of(pyconfig).summary = summary
    if run_dir and (run_dir / "progress.log").exists():
        artifacts_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / "progress.log", artifacts_dir / "progress.log")
    if run_dir:
        shutil.rmtree(run_dir, ignore_errors=True)


def abort_run(pyconfig: pytest.Config) -> None:
    """SIGTERM path: end our child processes (workers, kind), then delete what this run created."""
    for pid in _descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _descendants(os.getpid()):
        time.sleep(0.2)
    run_dir: Path = runstate.of(pyconfig).run_dir
    if not run_dir:
        return
    owner = run_owner(run_dir)
    created = (run_dir / "created").read_text().split() if (run_dir / "created").exists() else []
    for name in dict.fromkeys(created):
        try:  # one cluster's failure must not keep the others (or the guest) from going
            kc = KindCluster.ours(name, owner)
            _remove_external_clients(name, kc.runner)
            if not pyconfig.option.keep_clusters:
                kc.delete()
        except Exception as e:  # noqa: BLE001 - what is left, `svc-harness clean` removes
            log.warning("could not delete cluster %s while aborting: %s", name, e)
    for eng in _engines_used(run_dir).values():
        try:
            eng.release(run_dir.name, keep=pyconfig.option.keep_clusters)
        except Exception as e:  # noqa: BLE001
            log.warning("could not release the %s engine while aborting: %s", eng.kind, e)


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid` (from /proc; no extra dependency)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z":  # a killed worker stays a zombie until we (busy here) reap it
                children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _remove_external_clients(cluster: str, runner: Runner = DEFAULT) -> None:
    engine.remove_containers(runner, f"{config.OWNER_LABEL}=external-client", f"{cluster}-ext")
