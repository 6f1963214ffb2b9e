"""What a run must leave as it found it: kube-system, nodes, namespaces, cluster-scoped objects.

A snapshot is plain JSON (so the controller can keep it in the run directory):
  kube-system   resourceVersions of every ConfigMap, Secret, ServiceAccount, Role, RoleBinding and
                Service; generations of DaemonSets and Deployments (their status moves on its own);
                pod UIDs and restart counts
  nodes         labels, taints and cordons (resourceVersions are left out on purpose: kubelet
                heartbeats bump them)
  namespaces    every namespace but the harness's own test namespaces, and those of ours that
                are still there and not being deleted (a leaked test namespace shows as new)
  cluster       ClusterRoles, ClusterRoleBindings, webhook configurations, StorageClasses,
                PriorityClasses (resourceVersions: they have no status); CRDs and ServiceCIDRs
                (generation: their status moves on its own); APIServices (a hash of the spec,
                for the same reason); MetalLB address pools where MetalLB is installed
"""
from __future__ import annotations

import hashlib
import json

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from ..kube import Kube

# Test namespaces carry this label (Kube.create_namespace); they are the run's to create and delete.
OWN_NAMESPACE_LABEL = ("app.kubernetes.io/managed-by", "svc-harness")


class SnapshotForbidden(RuntimeError):
    """The credentials may not read something the snapshot needs (the API server's words say what)."""


def take(kube: Kube) -> dict[str, dict[str, str]]:
    """{section: {object: state}}; every value a string, so a diff reads as before -> after.
    SnapshotForbidden when the credentials may not read one of them (HTTP 403)."""
    try:
        return _take(kube)
    except ApiException as e:
        if e.status != 403:
            raise
        try:
            said = json.loads(e.body or "{}").get("message") or e.reason
        except ValueError:
            said = e.reason
        raise SnapshotForbidden(f"the before/after snapshot needs read access to kube-system, nodes, namespaces "
                                f"and cluster-scoped objects (see docs/byo.md), and the API server said: {said}") from None


def _take(kube: Kube) -> dict[str, dict[str, str]]:
    ns = "kube-system"
    api = kube.core.api_client
    rbac = k8s.RbacAuthorizationV1Api(api)
    rv = lambda items: {o.metadata.name: o.metadata.resource_version for o in items}  # noqa: E731
    snap: dict[str, dict[str, str]] = {}
    snap["configmaps"] = rv(kube.core.list_namespaced_config_map(ns).items)
    # kubeadm's bootstrap tokens expire and are removed on their own, whatever a run does.
    snap["secrets"] = rv(s for s in kube.core.list_namespaced_secret(ns).items
                         if s.type != "bootstrap.kubernetes.io/token")
    snap["serviceaccounts"] = rv(kube.core.list_namespaced_service_account(ns).items)
    snap["roles"] = rv(rbac.list_namespaced_role(ns).items)
    snap["rolebindings"] = rv(rbac.list_namespaced_role_binding(ns).items)
    # generation, not resourceVersion: their controllers rewrite the status without any change to
    # the spec; a spec change bumps the generation.
    snap["daemonsets"] = _generations(kube.apps.list_namespaced_daemon_set(ns).items)
    snap["deployments"] = _generations(kube.apps.list_namespaced_deployment(ns).items)
    snap["services"] = rv(kube.core.list_namespaced_service(ns).items)
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
    all_ns = kube.core.list_namespace().items
    snap["namespaces"] = {n.metadata.name: n.metadata.uid for n in all_ns
                          if (n.metadata.labels or {}).get(key) != value}
    snap["test-namespaces-left"] = {n.metadata.name: "not deleted" for n in all_ns
                                    if (n.metadata.labels or {}).get(key) == value
                                    and not n.metadata.deletion_timestamp}
    snap.update(_cluster_scoped(api, rbac, rv))
    return snap


def _cluster_scoped(api, rbac, rv) -> dict[str, dict[str, str]]:
    adm = k8s.AdmissionregistrationV1Api(api)
    out = {
        "clusterroles": rv(rbac.list_cluster_role().items),
        "clusterrolebindings": rv(rbac.list_cluster_role_binding().items),
        "validatingwebhookconfigurations": rv(adm.list_validating_webhook_configuration().items),
        "mutatingwebhookconfigurations": rv(adm.list_mutating_webhook_configuration().items),
        "storageclasses": rv(k8s.StorageV1Api(api).list_storage_class().items),
        "priorityclasses": rv(k8s.SchedulingV1Api(api).list_priority_class().items),
        "customresourcedefinitions": _generations(k8s.ApiextensionsV1Api(api).list_custom_resource_definition().items),
        "apiservices": {a.metadata.name: _spec_hash(api, a.spec)
                        for a in k8s.ApiregistrationV1Api(api).list_api_service().items},
    }
    try:  # networking.k8s.io/v1 ServiceCIDR: GA in 1.33
        out["servicecidrs"] = _generations(k8s.NetworkingV1Api(api).list_service_cidr().items)
    except (ApiException, AttributeError):
        pass
    crds = out["customresourcedefinitions"]
    if "ipaddresspools.metallb.io" in crds:
        pools = k8s.CustomObjectsApi(api).list_cluster_custom_object("metallb.io", "v1beta1", "ipaddresspools")
        out["metallb-ipaddresspools"] = {f"{o['metadata']['namespace']}/{o['metadata']['name']}":
                                         o["metadata"]["resourceVersion"] for o in pools.get("items", [])}
    return out


def _generations(items) -> dict[str, str]:
    return {o.metadata.name: f"generation={o.metadata.generation}" for o in items}


def _spec_hash(api, spec) -> str:
    text = json.dumps(api.sanitize_for_serialization(spec), sort_keys=True)
    return "spec sha256 " + hashlib.sha256(text.encode()).hexdigest()[:12]


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
