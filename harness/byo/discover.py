"""Reach a cluster the harness did not make, and find out what the kind path knows by construction.

`preflight` runs once in the pytest controller before anything is created:
the kubeconfig and context load, the API server answers and accepts the
credentials, at least two workers take pods, and every kube-proxy agrees on
one mode. Any of these failing is a ByoError with a clear message (the plugin
turns it into a usage error: non-zero exit, nothing created).

`discover` runs once per run (first xdist worker, behind the run's lock):
node access, the allowed traffic targets (nodes, pod and Service ranges, the
kind network when the nodes are local kind containers), whether a
LoadBalancer provider there is, and the external vantage point. The provider
is read from MetalLB's objects; a LoadBalancer Service is created to find
another provider only with --allow-cluster-changes (in a short-lived, labelled
namespace), because on a cloud cluster it provisions a real load balancer with
a public address, and MetalLB in BGP mode announces its address to routers.
"""
from __future__ import annotations

import ipaddress
import json
import logging
from dataclasses import asdict, dataclass, field

from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from .. import config, engine, modes
from ..kube import Kube
from ..runner import DEFAULT, Runner
from ..waits import Wait, WaitTimeout

log = logging.getLogger(__name__)

MIN_WORKERS = 2           # pods on two workers besides the control plane: the article's three nodes
API_TIMEOUT = (5, 15)     # (connect, read) seconds for the reachability check
LB_PROBE_SECONDS = 15     # a provider assigns within a second or two (MetalLB here: ~1 s)
CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")


class ByoError(RuntimeError):
    """The cluster behind --byo-kubeconfig cannot be used; the message says why and what to do."""


@dataclass
class NodeInfo:
    name: str
    ip: str              # InternalIP
    role: str            # control-plane | worker
    schedulable: bool    # a worker that takes the test pods
    why_not: str = ""    # why it does not (cordoned, tainted, NotReady, control plane)


@dataclass
class Preflight:
    kubeconfig: str
    context: str | None
    server: str
    mode: str
    mode_sources: dict[str, str]     # "ConfigMap" / "<node> log" -> mode seen there
    nodes: list[NodeInfo]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Preflight":
        d = json.loads(text)
        d["nodes"] = [NodeInfo(**n) for n in d["nodes"]]
        return cls(**d)


@dataclass
class Discovery:
    node_access: str                     # docker (local kind containers) | pod (hostNetwork pods)
    external: str                        # container | host | none
    networks: list[str]                  # allowed traffic targets
    pod_cidrs: list[str]
    service_cidrs: list[str]
    lb_provider: str                     # none | metallb | other
    lb_detail: str                       # what answered, from which pool
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Discovery":
        return cls(**json.loads(text))


# ---------------------------------------------------------------- preflight
def connect(kubeconfig: str, context: str | None) -> tuple[Kube, str]:
    """A Kube client for the kubeconfig/context whose credentials the API server accepts."""
    try:
        contexts, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
    except (ConfigException, OSError, ValueError) as e:
        raise ByoError(f"--byo-kubeconfig={kubeconfig}: not a usable kubeconfig ({e})") from None
    names = [c["name"] for c in contexts or []]
    if context and context not in names:
        raise ByoError(f"--byo-context={context}: {kubeconfig} has no such context "
                       f"(it has: {', '.join(names) or 'none'})")
    ctx = context or (active or {}).get("name")
    try:
        kube = Kube(kubeconfig, context=context)
    except (ConfigException, OSError, ValueError) as e:
        raise ByoError(f"--byo-kubeconfig={kubeconfig}, context {ctx}: cannot build a client ({e})") from None
    server = kube.core.api_client.configuration.host
    where = f"the API server at {server} (context {ctx} of {kubeconfig})"
    try:
        kube.core.list_node(_request_timeout=API_TIMEOUT)
    except ApiException as e:
        if e.status == 401:
            raise ByoError(f"{where} rejected the credentials (HTTP 401 Unauthorized): expired or revoked? "
                           "Refresh the kubeconfig") from None
        if e.status == 403:
            raise ByoError(f"{where} does not let these credentials list nodes (HTTP 403); the harness "
                           "needs to read nodes, kube-system and to manage its own namespaces") from None
        raise ByoError(f"{where} answered HTTP {e.status}: {e.reason}") from None
    except Exception as e:  # urllib3 connection errors, TLS errors, timeouts
        reason = getattr(e, "reason", None) or e
        raise ByoError(f"cannot reach {where}: {reason}") from None
    return kube, server


def _is_control_plane(labels: dict) -> bool:
    return any(k in labels for k in CONTROL_PLANE_LABELS)


def node_infos(kube: Kube) -> list[NodeInfo]:
    out = []
    for n in kube.core.list_node().items:
        labels = n.metadata.labels or {}
        ip = next((a.address for a in n.status.addresses or [] if a.type == "InternalIP"), "")
        ready = any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
        blocking = [t for t in n.spec.taints or [] if t.effect in ("NoSchedule", "NoExecute")]
        cp = _is_control_plane(labels)
        why = ("control plane" if cp else "cordoned" if n.spec.unschedulable else "NotReady" if not ready
               else f"tainted {blocking[0].key}:{blocking[0].effect}" if blocking else "")
        out.append(NodeInfo(n.metadata.name, ip, "control-plane" if cp else "worker", not why, why))
    return sorted(out, key=lambda n: (n.role != "control-plane", n.name))


def proxy_mode(kube: Kube) -> tuple[str, dict[str, str]]:
    """The one kube-proxy mode of the cluster: its ConfigMap and every node's kube-proxy log agree."""
    sources: dict[str, str] = {}
    try:
        sources["ConfigMap kube-system/kube-proxy"] = modes.configmap_mode(kube)
    except ApiException as e:
        if e.status != 404:
            raise
    proxies = {p.node: p.name for p in kube.pods(modes.KUBE_PROXY_SELECTOR, "kube-system")}
    nodes = [n.metadata.name for n in kube.core.list_node().items]
    missing = [n for n in nodes if n not in proxies]
    if missing:
        raise ByoError(f"no kube-proxy pod ({modes.KUBE_PROXY_SELECTOR} in kube-system) on "
                       f"{', '.join(missing)}; these suites check kube-proxy's modes and need it on every node")
    for node, pod in sorted(proxies.items()):
        seen = modes.parse_using_line(kube.logs(pod, "kube-system", tail=100000))
        if seen:  # a rotated log has no `Using ... Proxier` line any more; the ConfigMap still counts
            sources[f"{node} (log of {pod})"] = seen
    found = set(sources.values())
    if not found:
        raise ByoError("could not tell kube-proxy's mode: no kube-proxy ConfigMap and no `Using <mode> "
                       "Proxier` line in any kube-proxy log")
    if len(found) > 1:
        raise ByoError("kube-proxy's mode is not one mode: " + "; ".join(f"{k}: {v}" for k, v in sources.items()))
    mode = found.pop()
    if mode not in config.PROXY_MODES:
        raise ByoError(f"kube-proxy runs in mode {mode!r}; these suites know {', '.join(config.PROXY_MODES)}")
    return mode, sources


def preflight(kubeconfig: str, context: str | None, asked_modes: list[str] | None) -> Preflight:
    kube, server = connect(kubeconfig, context)
    nodes = node_infos(kube)
    workers = [n for n in nodes if n.schedulable]
    if len(workers) < MIN_WORKERS:
        others = "; ".join(f"{n.name}: {n.why_not}" for n in nodes if not n.schedulable)
        raise ByoError(f"the cluster at {server} has {len(workers)} schedulable worker node(s) "
                       f"({', '.join(n.name for n in workers) or 'none'}; not schedulable: {others or 'none'}); "
                       f"the experiments need at least {MIN_WORKERS} (backends and clients on different nodes)")
    mode, sources = proxy_mode(kube)
    if asked_modes and mode not in asked_modes:
        raise ByoError(f"--proxy-mode={','.join(asked_modes)}, but the cluster at --byo-kubeconfig runs kube-proxy "
                       f"in {mode} mode ({'; '.join(f'{k}: {v}' for k, v in sources.items())}); "
                       f"drop --proxy-mode (the cluster's mode is used) or run against a {asked_modes[0]} cluster")
    return Preflight(kubeconfig, context, server, mode, sources, nodes)


# ---------------------------------------------------------------- discovery
def local_kind_nodes(nodes: list[NodeInfo], runner: Runner = DEFAULT) -> tuple[bool, str]:
    """Are the nodes containers on this machine's kind network, with their InternalIPs there?"""
    for n in nodes:
        res = runner.run(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", n.name], check=False,
                         timeout=30)
        if not res.ok:
            return False, f"{n.name} is not a container on this machine"
        nets = json.loads(res.stdout or "{}") or {}
        ip = (nets.get(config.KIND_NETWORK) or {}).get("IPAddress")
        if ip != n.ip:
            return False, (f"container {n.name} has {ip or 'no address'} on the {config.KIND_NETWORK} network, "
                           f"the node's InternalIP is {n.ip}")
    return True, f"every node is a container on this machine's {config.KIND_NETWORK} network"


def pod_cidrs(kube: Kube) -> list[str]:
    out = []
    for n in kube.core.list_node().items:
        out += list(n.spec.pod_cidrs or ([n.spec.pod_cidr] if n.spec.pod_cidr else []))
    if not out:  # no per-node ranges: the controller manager's --cluster-cidr
        out = _static_pod_flag(kube, "component=kube-controller-manager", "--cluster-cidr")
    return sorted({c for c in out if ":" not in c})


def service_cidrs(kube: Kube) -> list[str]:
    """The API server's --service-cluster-ip-range, else the ServiceCIDR objects (networking/v1)."""
    out = _static_pod_flag(kube, "component=kube-apiserver", "--service-cluster-ip-range")
    if not out:
        res = kube.kubectl("get", "servicecidrs", "-o", "json", check=False)
        if res.ok:
            for item in json.loads(res.stdout).get("items", []):
                out += item.get("spec", {}).get("cidrs", [])
    return sorted({c for c in out if ":" not in c})


def _static_pod_flag(kube: Kube, selector: str, flag: str) -> list[str]:
    out = []
    for p in kube.core.list_namespaced_pod("kube-system", label_selector=selector).items:
        for arg in p.spec.containers[0].command or []:
            if arg.startswith(flag + "="):
                out += arg.split("=", 1)[1].split(",")
    return out


def metallb_pools(kube: Kube) -> list[str]:
    """MetalLB IPAddressPool addresses (CIDRs or first-last ranges), read only."""
    res = kube.kubectl("get", "ipaddresspools.metallb.io", "-A", "-o", "json", check=False)
    if not res.ok:
        return []
    return [a for item in json.loads(res.stdout).get("items", []) for a in item.get("spec", {}).get("addresses", [])]


def _networks_of(ranges: list[str]) -> list[str]:
    out = []
    for r in ranges:
        if "-" in r:
            first, last = (ipaddress.ip_address(x.strip()) for x in r.split("-"))
            out += [str(n) for n in ipaddress.summarize_address_range(first, last)]
        elif ":" not in r:
            out.append(str(ipaddress.ip_network(r, strict=False)))
    return out


def metallb_bgp(kube: Kube) -> list[str]:
    """Names of MetalLB BGPAdvertisements (MetalLB then announces its addresses to routers), read only."""
    res = kube.kubectl("get", "bgpadvertisements.metallb.io", "-A", "-o", "json", check=False)
    if not res.ok:
        return []
    return [i["metadata"]["name"] for i in json.loads(res.stdout).get("items", [])]


def load_balancer(kube: Kube, namespace: str, allow_changes: bool) -> tuple[str, str, list[str]]:
    """(provider: metallb/other/none, what was found, the provider's address ranges) for the
    LoadBalancer experiments, without side effects outside the cluster unless allow_changes."""
    pools, bgp = metallb_pools(kube), metallb_bgp(kube)
    if pools and (not bgp or allow_changes):
        return "metallb", f"MetalLB with pool(s) {', '.join(pools)} (read from its IPAddressPools)", _networks_of(pools)
    if pools:
        return "none", (f"MetalLB announces over BGP ({', '.join(bgp)}): a test LoadBalancer Service would be "
                        "announced to the routers, so the LoadBalancer experiments run only with "
                        "--allow-cluster-changes"), []
    if not allow_changes:
        return "none", ("no MetalLB IPAddressPool; any other provider (a cloud's) would provision a real load "
                        "balancer for each test Service, so the LoadBalancer experiments look for one only with "
                        "--allow-cluster-changes"), []
    lb_ip = probe_load_balancer(kube, namespace)
    if lb_ip is None:
        return "none", f"no LoadBalancer provider gave an address within {LB_PROBE_SECONDS}s", []
    nets = [f"{lb_ip}/32"] if ":" not in lb_ip and lb_ip[:1].isdigit() else []
    return "other", f"a provider answered with {lb_ip} (not MetalLB)", nets


def probe_load_balancer(kube: Kube, namespace: str) -> str | None:
    """Create a LoadBalancer Service in our own namespace; the address a provider gives it, or None."""
    from ..kube import load_manifest
    kube.create_namespace(namespace)
    try:
        kube.apply(load_manifest("service-loadbalancer", NAME="lb-probe"), namespace)
        try:
            return Wait("a LoadBalancer provider to give lb-probe an address", timeout=LB_PROBE_SECONDS,
                        interval=1).until(
                lambda: next((i.ip or i.hostname for i in
                              kube.service("lb-probe", namespace).status.load_balancer.ingress or []), None))
        except WaitTimeout:
            return None
    finally:
        kube.delete_namespace(namespace)


def discover(kube: Kube, pre: Preflight, namespace: str, node_access: str = "auto",
             external: str = "container", allow_changes: bool = False, runner: Runner = DEFAULT) -> Discovery:
    notes = []
    local, why = local_kind_nodes(pre.nodes, runner)
    notes.append(f"nodes: {why}")
    if node_access == "docker" and not local:
        raise ByoError(f"--node-access=docker: {why}")
    access = node_access if node_access != "auto" else ("docker" if local else "pod")
    if access == "docker" and not local:
        access = "pod"
    if local:
        ext = external
    else:
        ext = "host" if external == "host" else "none"
    if ext == "none":
        notes.append("external client: none (the nodes are not local kind containers; "
                     "--external-client=host uses this machine)")

    pods, svcs = pod_cidrs(kube), service_cidrs(kube)
    if not svcs:
        raise ByoError("could not find the Service range: no kube-apiserver pod with "
                       "--service-cluster-ip-range in kube-system and no ServiceCIDR objects")
    nets = ["127.0.0.0/8", *(f"{n.ip}/32" for n in pre.nodes if n.ip), *pods, *svcs]
    if local:
        nets.append(engine.network_subnet(runner))

    provider, detail, lb_nets = load_balancer(kube, namespace, allow_changes)
    nets += lb_nets
    notes.append(f"LoadBalancer: {detail}")
    return Discovery(node_access=access, external=ext, networks=list(dict.fromkeys(nets)), pod_cidrs=pods,
                     service_cidrs=svcs, lb_provider=provider, lb_detail=detail, notes=notes)
