"""Vantage points: where traffic comes from.

Every peer has the same shape (name, ip, where, exec) so a probe reads the same
from a client pod, a node, or an external client:

  PodPeer       a client pod pinned to a chosen node (kubectl exec)
  NodePeer      a node itself, like the article's curl from the control plane (docker exec; on a
                --byo-kubeconfig cluster the probe runs in a sidecar sharing the node's network
                namespace, or from a hostNetwork pod where the nodes are not local containers)
  ExternalPeer  a client outside every node, like the article's host `rocky1`:
                by default a container on the kind network, or this host (`--external-client=host`)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from . import config
from .cluster import Node
from .engine import kind_gateway, remove_container
from .kube import Kube, load_manifest
from .probe import PROBE_BIN
from .runner import DEFAULT, Result, Runner

log = logging.getLogger(__name__)


@dataclass
class Peer:
    name: str
    ip: str
    where: str                      # "pod" | "node" | "external": the vantage key of expectations
    runner: Runner = field(default=DEFAULT, repr=False)

    def describe(self) -> str:
        return f"{self.where} {self.name} ({self.ip})"

    def exec(self, argv: list[str], timeout: float = 120, check: bool = True) -> Result:
        raise NotImplementedError

    def close(self) -> None:
        """Remove whatever this peer started outside the cluster (nothing by default)."""


@dataclass
class NodePeer(Peer):
    container: str = ""
    probe_container: str = ""   # a sidecar in the node's network namespace that runs svc-probe

    def exec(self, argv, timeout=120, check=True):
        target = self.probe_container if (self.probe_container and argv[:1] == [PROBE_BIN]) else self.container
        return self.runner.run(["docker", "exec", target, *argv], timeout=timeout, check=check,
                               what=f"exec on {self.describe()}")

    def close(self) -> None:
        if self.probe_container:
            remove_container(self.runner, self.probe_container)

    @classmethod
    def of(cls, node: Node, runner: Runner = DEFAULT) -> "NodePeer":
        peer = cls(node.name, node.ip, "node", runner, container=node.name)
        install_probe(runner, node.name)
        return peer

    @classmethod
    def with_sidecar(cls, node: Node, sidecar: str, image: str, runner: Runner = DEFAULT) -> "NodePeer":
        """A node we may not change (--byo-kubeconfig): reads by docker exec, the probe from a toolbox
        container joined to the node's network namespace (same addresses, routes and rules)."""
        remove_container(runner, sidecar)
        runner.engine(f"start the probe sidecar of {node.name}", lambda c: c.containers.run(
            image, ["infinity"], entrypoint="sleep", name=sidecar, detach=True,
            network_mode=f"container:{node.name}", labels={config.OWNER_LABEL: "node-sidecar"}))
        return cls(node.name, node.ip, "node", runner, container=node.name, probe_container=sidecar)


@dataclass
class PodPeer(Peer):
    namespace: str = ""
    node: str = ""
    kube: Kube | None = field(default=None, repr=False)

    def describe(self) -> str:
        return f"pod {self.name}@{self.node} ({self.ip})"

    def exec(self, argv, timeout=120, check=True):
        return self.kube.exec(self.name, self.namespace, argv, timeout=timeout, check=check)

    @classmethod
    def start(cls, kube: Kube, namespace: str, node: str, image: str, name: str = "",
              host_network: bool = False) -> "PodPeer":
        """A toolbox pod pinned to `node` (tolerating the control plane's taint), Ready.

        host_network=True makes it the node's vantage point (its address, routes and kube-proxy
        rules) where the node itself cannot be entered; it goes with the test namespace."""
        name = name or f"{'node' if host_network else 'client'}-{node.rsplit('-', 1)[-1]}"
        kube.apply(load_manifest("client", NAME=name, NODE=node, IMAGE=image,
                                 HOST_NETWORK=str(host_network).lower()), namespace)
        kube.wait_pod_ready(name, namespace)
        pod = kube.core.read_namespaced_pod(name, namespace)
        return cls(name, pod.status.pod_ip, "node" if host_network else "pod", kube.runner,
                   namespace=namespace, node=node, kube=kube)


@dataclass
class ExternalPeer(Peer):
    container: str = ""

    def exec(self, argv, timeout=120, check=True):
        if not self.container:  # this host
            argv = [str(config.BIN / "svc-probe"), *argv[1:]] if argv[:1] == [PROBE_BIN] else argv
            return self.runner.run(argv, timeout=timeout, check=check)
        return self.runner.run(["docker", "exec", self.container, *argv], timeout=timeout, check=check,
                               what=f"exec on {self.describe()}")

    def close(self) -> None:
        if self.container:
            remove_container(self.runner, self.container)

    @classmethod
    def start(cls, name: str, image: str, runner: Runner = DEFAULT) -> "ExternalPeer":
        """A toolbox container on the kind network, outside every node (replaced if stale)."""
        remove_container(runner, name)

        def run(c) -> str:
            x = c.containers.run(image, ["infinity"], entrypoint="sleep", name=name, detach=True,
                                 network=config.KIND_NETWORK, labels={config.OWNER_LABEL: "external-client"})
            x.reload()
            return x.attrs["NetworkSettings"]["Networks"][config.KIND_NETWORK]["IPAddress"]
        ip = runner.engine(f"start external client {name}", run)
        return cls(name, ip, "external", runner, container=name)

    @classmethod
    def host(cls, runner: Runner = DEFAULT, towards: str = "") -> "ExternalPeer":
        """This machine, seen by the cluster through the kind bridge's gateway address (or, for a
        cluster elsewhere, the source address this machine uses towards node `towards`)."""
        if towards:
            out = runner.run(["ip", "-o", "route", "get", towards]).stdout.split()
            ip = out[out.index("src") + 1] if "src" in out else ""
            return cls("host", ip, "external", runner, container="")
        return cls("host", kind_gateway(runner), "external", runner, container="")


def install_probe(runner: Runner, container: str) -> None:
    """Copy the static svc-probe into a node container (node images need not ship it); a
    reused node may hold an older build, so only the same bytes count as installed."""
    import hashlib
    import io
    import tarfile
    want = hashlib.sha256((config.BIN / "svc-probe").read_bytes()).hexdigest()
    have = runner.run(["docker", "exec", container, "sha256sum", PROBE_BIN], check=False)
    if have.ok and have.stdout.split()[:1] == [want]:
        return
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(config.BIN / "svc-probe"), arcname=Path(PROBE_BIN).name)
    runner.engine(f"install svc-probe on {container}",
                  lambda c: c.containers.get(container).put_archive(str(Path(PROBE_BIN).parent), buf.getvalue()))
