"""Vantage points: where traffic comes from.

Every peer has the same shape (name, ip, where, exec) so a probe reads the same
from a client pod, a node, or an external client:

  PodPeer       a client pod pinned to a chosen node (kubectl exec)
  NodePeer      a node itself, like the article's curl from the control plane (docker exec)
  ExternalPeer  a client outside every node, like the article's host `rocky1`:
                by default a container on the kind network, or this host (`--external-client=host`)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from . import config
from .cluster import Node
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


@dataclass
class NodePeer(Peer):
    container: str = ""

    def exec(self, argv, timeout=120, check=True):
        return self.runner.run(["docker", "exec", self.container, *argv], timeout=timeout, check=check,
                               what=f"exec on {self.describe()}")

    @classmethod
    def of(cls, node: Node, runner: Runner = DEFAULT) -> "NodePeer":
        peer = cls(node.name, node.ip, "node", runner, container=node.name)
        install_probe(runner, node.name)
        return peer


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
    def start(cls, kube: Kube, namespace: str, node: str, image: str, name: str = "") -> "PodPeer":
        """A toolbox pod pinned to `node` (tolerating the control plane's taint), Ready."""
        name = name or f"client-{node.rsplit('-', 1)[-1]}"
        kube.apply(load_manifest("client", NAME=name, NODE=node, IMAGE=image), namespace)
        kube.wait_pod_ready(name, namespace)
        pod = kube.core.read_namespaced_pod(name, namespace)
        return cls(name, pod.status.pod_ip, "pod", kube.runner, namespace=namespace, node=node, kube=kube)


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
            self.runner.run(["docker", "rm", "-f", self.container], check=False)

    @classmethod
    def start(cls, name: str, image: str, runner: Runner = DEFAULT) -> "ExternalPeer":
        """A toolbox container on the kind network, outside every node (replaced if stale)."""
        runner.run(["docker", "rm", "-f", name], check=False)
        runner.run(["docker", "run", "-d", "--name", name, "--network", config.KIND_NETWORK,
                    "--label", f"{config.OWNER_LABEL}=external-client",
                    "--entrypoint", "sleep", image, "infinity"], what=f"starting external client {name}")
        ip = runner.run(["docker", "inspect", "-f",
                         '{{(index .NetworkSettings.Networks "%s").IPAddress}}' % config.KIND_NETWORK,
                         name]).stdout.strip()
        return cls(name, ip, "external", runner, container=name)

    @classmethod
    def host(cls, runner: Runner = DEFAULT) -> "ExternalPeer":
        """This machine, seen by the cluster through the kind bridge's gateway address."""
        gw = runner.run(["docker", "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
                         config.KIND_NETWORK]).stdout.split()
        ip = next((g for g in gw if ":" not in g), "")
        return cls("host", ip, "external", runner, container="")


def install_probe(runner: Runner, container: str) -> None:
    """Copy the static svc-probe into a node container (node images need not ship it)."""
    if runner.run(["docker", "exec", container, "test", "-x", PROBE_BIN], check=False).ok:
        return
    runner.run(["docker", "cp", str(config.BIN / "svc-probe"), f"{container}:{PROBE_BIN}"],
               what=f"installing svc-probe on {container}")
