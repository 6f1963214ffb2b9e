"""What a run must leave as it found it: kube-system objects, nodes, namespaces.

A snapshot is plain JSON (so the controller can keep it in the run directory):
resourceVersions of kube-system ConfigMaps, DaemonSets, Deployments and
Services, kube-system pod UIDs and restart counts, node labels, taints and
cordons, and the namespaces that are not the harness's own test namespaces.
Node resourceVersions are left out on purpose: kubelet heartbeats bump them.
"""
from __future__ import annotations

from ..kube import Kube

# Test namespaces carry this label (Kube.create_namespace); they are the run's to create and delete.
OWN_NAMESPACE_LABEL = ("app.kubernetes.io/managed-by", "svc-harness")


def take(kube: Kube) -> dict[str, dict[str, str]]:
    """{section: {object: state}}; every value a string, so a diff reads as before -> after."""
    ns = "kube-system"
    snap: dict[str, dict[str, str]] = {}
    snap["configmaps"] = {c.metadata.name: c.metadata.resource_version
                          for c in kube.core.list_namespaced_config_map(ns).items}
    snap["daemonsets"] = {d.metadata.name: d.metadata.resource_version
                          for d in kube.apps.list_namespaced_daemon_set(ns).items}
    snap["deployments"] = {d.metadata.name: d.metadata.resource_version
                           for d in kube.apps.list_namespaced_deployment(ns).items}
    snap["services"] = {s.metadata.name: s.metadata.resource_version
                        for s in kube.core.list_namespaced_service(ns).items}
    pods = {}
    for p in kube.core.list_namespaced_pod(ns).items:
        if p.metadata.deletion_timestamp:  # already on its way out (e.g. the old pods of a finished rollout)
            continue
        restarts = sum(c.restart_count for c in (p.status.container_statuses or []))
        pods[p.metadata.name] = f"uid={p.metadata.uid} restarts={restarts}"
    snap["pods"] = pods
    nodes = {}
    for n in kube.core.list_node().items:
        labels = ",".join(f"{k}={v}" for k, v in sorted((n.metadata.labels or {}).items()))
        taints = ",".join(sorted(f"{t.key}={t.value or ''}:{t.effect}" for t in (n.spec.taints or [])))
        nodes[n.metadata.name] = f"labels[{labels}] taints[{taints}] unschedulable={bool(n.spec.unschedulable)}"
    snap["nodes"] = nodes
    key, value = OWN_NAMESPACE_LABEL
    snap["namespaces"] = {n.metadata.name: n.metadata.uid for n in kube.core.list_namespace().items
                          if (n.metadata.labels or {}).get(key) != value}
    return snap


def diff(before: dict, after: dict) -> list[str]:
    """One line per object that appeared, disappeared or changed; empty when nothing did."""
    lines = []
    for section in sorted(set(before) | set(after)):
        b, a = before.get(section, {}), after.get(section, {})
        for name in sorted(set(b) | set(a)):
            if name not in a:
                lines.append(f"{section}/{name}: gone (was {b[name]})")
            elif name not in b:
                lines.append(f"{section}/{name}: new ({a[name]})")
            elif a[name] != b[name]:
                lines.append(f"{section}/{name}: {b[name]} -> {a[name]}")
    return lines


def counts(snap: dict) -> str:
    return ", ".join(f"{len(v)} {k}" for k, v in sorted(snap.items()))
