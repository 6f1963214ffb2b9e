"""--byo-kubeconfig: attach the run to a cluster we did not make, and account for it at the end.

  attach   the ClusterHandle of the user's cluster (discovery once per run, harness.byo.discover)
  finish   remove our containers, compare the cluster with the snapshot taken before the run
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from .. import config, engine, runstate
from ..cluster import Node
from ..kube import Kube
from ..lab import ClusterHandle, Images
from ..runner import DEFAULT
from . import discover, snapshot

log = logging.getLogger(__name__)


def attach(pyconfig: pytest.Config, images: Images, worker: str) -> ClusterHandle:
    """--byo-kubeconfig: a cluster we did not make; never changed beyond test namespaces.

    The controller's preflight found the mode and nodes; the first worker here discovers the rest
    (harness.byo.discover) once for the run, behind the run's lock."""
    opts = pyconfig.option
    run_dir: Path = runstate.of(pyconfig).run_dir
    pre = runstate.of(pyconfig).byo
    kube = Kube(opts.byo_kubeconfig, context=opts.byo_context)
    def discover_once() -> dict:
        disc = discover.discover(kube, pre, namespace=f"svc-discovery-{run_dir.name}",
                                 node_access=opts.node_access, external=opts.external_client,
                                 allow_changes=opts.allow_cluster_changes)
        if disc.node_access == "docker":  # local kind nodes: the same guard as our own clusters
            engine.ensure_egress_guard()
        for line in disc.notes:
            log.info("--byo-kubeconfig cluster: %s", line)
        return json.loads(disc.to_json())

    try:
        disc = discover.Discovery(**runstate.run_once(run_dir, "byo-discovery", discover_once))
    except runstate.OnceError as e:
        pytest.fail(str(e), pytrace=False)
    # Cordoned, tainted or NotReady workers stay allowed traffic targets but get no test pods.
    nodes = [Node(n.name, n.ip, n.role if (n.schedulable or n.role == "control-plane") else "unschedulable")
             for n in pre.nodes]
    return ClusterHandle(mode=pre.mode, name=byo_prefix(run_dir), kube=kube, nodes=nodes, images=images, kind=None,
                         external_mode=disc.external, worker=worker, lb_provider=disc.lb_provider,
                         node_access=disc.node_access, networks=disc.networks,
                         allow_changes=opts.allow_cluster_changes, changes_log=run_dir / "byo-changes",
                         breaks=opts.breaks)


def byo_prefix(run_dir: Path) -> str:
    """Names of the containers a --byo-kubeconfig run starts on this machine (external clients, sidecars)."""
    return f"svc-byo-{run_dir.name}"


def finish(pyconfig: pytest.Config) -> tuple[list[str], bool]:
    """Controller, --byo-kubeconfig: remove our containers, compare the cluster with the snapshot taken
    before the run, and summarise. (lines, True if the cluster changed outside test namespaces
    without consent). Runs before finish_run, which removes the run directory."""
    opts = pyconfig.option
    run_dir: Path = runstate.of(pyconfig).run_dir
    summary: list[str] = []
    engine.remove_containers(DEFAULT, config.OWNER_LABEL, f"{byo_prefix(run_dir)}-")
    pre = runstate.of(pyconfig).byo
    state_file = run_dir / "byo-discovery.json"
    disc = json.loads(state_file.read_text()) if state_file.exists() else {}
    summary.append(f"svc-harness: --byo-kubeconfig cluster at {pre.server}: kube-proxy {pre.mode} "
                      f"({'; '.join(f'{k}: {v}' for k, v in pre.mode_sources.items())})")
    if disc and "error" not in disc:
        summary.append(f"svc-harness: discovered: node access {disc['node_access']}, external client "
                          f"{disc['external']}, LoadBalancer: {disc['lb_detail']}; traffic allowed to "
                          f"{', '.join(disc['networks'])}")
    changes_file = run_dir / "byo-changes"
    consented = changes_file.read_text().splitlines() if changes_file.exists() else []
    for change in dict.fromkeys(consented):
        summary.append(f"svc-harness: changed with --allow-cluster-changes (undone afterwards): {change}")
    before = runstate.of(pyconfig).byo_before
    try:
        after = snapshot.take(Kube(opts.byo_kubeconfig, context=opts.byo_context))
    except Exception as e:  # noqa: BLE001 - an unreadable cluster at the end is itself a failure
        summary.append(f"svc-harness: FAILED to take the after-run snapshot of the --byo-kubeconfig cluster: {e}")
        return summary, True
    changed = snapshot.diff(before, after)
    out = Path(opts.artifacts_dir) / "byo-snapshot.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"before": before, "after": after, "diff": changed}, indent=1))
    if disc.get("node_access") == "docker":
        drops = engine.egress_drops() - runstate.of(pyconfig).byo_drops_before
        summary.append(f"svc-harness: egress guard dropped {drops} packets during this run (expected 0)")
        if engine.HostEngine().remove_guard_if_unused():  # the user's network keeps none of our rules
            summary.append("svc-harness: egress guard rules removed from the kind network (no container of "
                           "the harness is left on it)")
    if not changed:
        summary.append(f"svc-harness: --byo-kubeconfig cluster left as found: kube-system and nodes unchanged "
                       f"({snapshot.counts(after)} compared; {out})")
        return summary, False
    verdict = "expected: changes were allowed" if consented else "the run FAILS: it must leave the cluster as found"
    summary.append(f"svc-harness: --byo-kubeconfig cluster CHANGED outside test namespaces ({len(changed)} differences; "
                   f"{verdict}); {out}:")
    summary += [f"    {line}" for line in changed]
    return summary, not consented
