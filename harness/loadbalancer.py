"""LoadBalancer provider: MetalLB in L2 mode, with an address pool inside the kind network.

The manifest comes from MetalLB's own Go module (the version pinned in
images/versions.env), with its images pointed at the ones built offline.
Each cluster gets its own slice of the kind network's last /24, so clusters
of different modes can run side by side without announcing the same address.
"""
from __future__ import annotations

import ipaddress
import logging
import re

from kubernetes import client as k8s

from . import config, engine
from .kube import Kube
from .runner import Step
from .waits import Wait, scaled

log = logging.getLogger(__name__)

POOL_SIZE = 16
# A loadBalancerClass no provider serves: such a Service stays <pending> even where MetalLB runs.
NO_PROVIDER_CLASS = "svc-harness.invalid/no-provider"
# MetalLB's event on the Service: announcing from node "kind-worker" with protocol "layer2"
_ANNOUNCING = re.compile(r'announcing from node "([^"]+)"')
# iputils arping: Unicast reply from 172.18.255.200 [02:42:AC:12:00:03]  0.680ms
_ARP_REPLY = re.compile(r"reply from \S+ \[([0-9A-Fa-f:]{17})\]")


def pool_range(subnet: str, mode: str) -> tuple[str, str]:
    """First/last address of this mode's pool: the top /24 of the kind subnet, 16 per mode.

    >>> pool_range("172.18.0.0/16", "iptables")
    ('172.18.255.200', '172.18.255.215')
    """
    net = ipaddress.ip_network(subnet)
    top = net.broadcast_address - 255  # x.y.255.0 for a /16
    start = top + 200 + POOL_SIZE * config.PROXY_MODES.index(mode)
    return str(start), str(start + POOL_SIZE - 1)


def manifest(version: str) -> str:
    from .images import module_dir
    text = (module_dir("go.universe.tf/metallb", version) / "config" / "manifests" / "metallb-native.yaml").read_text()
    for part in ("controller", "speaker"):
        text = text.replace(f"quay.io/metallb/{part}:{version}", f"docker.io/svc-harness/metallb-{part}:{version}")
    return text


def install_metallb(kube: Kube, mode: str, runner=None) -> str:
    """Install MetalLB and its pool; returns the provider name for the report."""
    v = config.versions()["METALLB_VERSION"]
    from .runner import DEFAULT
    first, last = pool_range(engine.network_subnet(runner or DEFAULT), mode)
    with Step(f"installing MetalLB {v} (pool {first}-{last})"):
        kube.kubectl("apply", "--server-side", "-f", "-", input=manifest(v), what="applying MetalLB",
                     idempotent=True)
        t = scaled(180)
        kube.kubectl("-n", "metallb-system", "rollout", "status", "deployment/controller", f"--timeout={t}s",
                     timeout=t + 20, what="MetalLB controller rollout")
        kube.kubectl("-n", "metallb-system", "rollout", "status", "daemonset/speaker", f"--timeout={t}s",
                     timeout=t + 20, what="MetalLB speaker rollout")
        pool = f"""apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: kind-pool
  namespace: metallb-system
spec:
  addresses:
  - {first}-{last}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  name: kind-l2
  namespace: metallb-system
"""
        # The pool is validated by MetalLB's webhook, which answers a little after the rollout.
        Wait("MetalLB's webhook to accept the address pool", timeout=120, interval=2).until(
            lambda: kube.kubectl("apply", "-f", "-", input=pool, check=False), lambda r: r.ok)
    return "metallb"


def announcing_nodes(kube: Kube, service: str, namespace: str) -> set[str]:
    """The nodes MetalLB's L2 mode announces the Service's address from now: each announcing
    speaker keeps a ServiceL2Status labelled with its node and deletes it when it stops. Two
    nodes at once is real: speakers that have not yet found each other (memberlist) both
    announce. MetalLB before v0.14 has no such objects: then its latest nodeAssigned event."""
    selector = f"metallb.io/service-name={service},metallb.io/service-namespace={namespace}"
    try:
        items = kube.custom.list_cluster_custom_object("metallb.io", "v1beta1", "servicel2statuses",
                                                       label_selector=selector)["items"]
    except k8s.ApiException as e:
        if e.status != 404:
            raise
        node = announcing_node(kube, service, namespace)
        return {node} if node else set()
    return {i["metadata"]["labels"]["metallb.io/node"] for i in items}


def announcing_node(kube: Kube, service: str, namespace: str) -> str | None:
    """The node named by the Service's latest nodeAssigned event (None before MetalLB announces).
    Events say where an announcement started, not whether it still runs."""
    found = [m.group(1) for msg in kube.event_messages(service, namespace, "nodeAssigned")
             if (m := _ANNOUNCING.search(msg))]
    return found[-1] if found else None


def arp_answers(peer, address: str, requests: int = 3) -> set[str]:
    """MAC addresses that answer ARP for `address` on the peer's link (bounded: `requests`
    requests, one a second). L2 mode means exactly one: the announcing node's."""
    res = peer.exec(["arping", "-c", str(requests), "-I", "eth0", address], check=False, timeout=requests + 10)
    return {mac.lower() for mac in _ARP_REPLY.findall(res.stdout)}
