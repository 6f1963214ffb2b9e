"""The bench the suites use: a cluster per mode, and a namespace per test.

`ClusterHandle` (session, one per proxy mode) knows the nodes, the API, the
images and the external clients. `Lab` (one per test) owns a namespace and
offers the article's steps: deploy the demo app, create a Service, scale,
start a client pod, probe from a vantage point, and check the outcome against
harness.expectations. Everything a test observes is noted for the report.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from . import config, engine, expectations
from .cluster import KindCluster, Node
from .kube import Kube, PodInfo, load_manifest
from .peers import ExternalPeer, NodePeer, Peer, PodPeer
from .probe import Sample, run_probe
from .runner import DEFAULT, Runner

log = logging.getLogger(__name__)

DEMO_SELECTOR = "app=demoapp"
DEMO_PORT = 80


@dataclass
class Images:
    demoapp: str
    toolbox: str


@dataclass
class ClusterHandle:
    mode: str
    name: str
    kube: Kube
    nodes: list[Node]
    images: Images
    kind: KindCluster | None = None      # None when running against --kubeconfig
    external_mode: str = "container"     # or "host"
    worker: str = "main"                 # xdist worker id: keeps container names apart
    lb_provider: str = "none"            # "metallb" once installed
    runner: Runner = field(default=DEFAULT, repr=False)
    _external: dict[int, ExternalPeer] = field(default_factory=dict, repr=False)

    @property
    def is_kind(self) -> bool:
        return self.kind is not None

    @property
    def control_plane(self) -> Node:
        return next(n for n in self.nodes if n.role == "control-plane")

    @property
    def workers(self) -> list[Node]:
        return [n for n in self.nodes if n.role != "control-plane"]

    def node(self, name: str) -> NodePeer:
        n = next(n for n in self.nodes if n.name == name)
        return NodePeer.of(n, self.runner)

    def external(self, index: int = 0) -> ExternalPeer:
        """External client number `index` (0 = the article's rocky1); started on first use."""
        if index not in self._external:
            if self.external_mode == "host" and index == 0:
                self._external[index] = ExternalPeer.host(self.runner)
            else:
                self._external[index] = ExternalPeer.start(f"{self.name}-ext-{self.worker}-{index}",
                                                           self.images.toolbox, self.runner)
        return self._external[index]

    def close(self) -> None:
        for peer in self._external.values():
            peer.close()
        self._external.clear()


@dataclass
class Service:
    name: str
    namespace: str
    cluster_ip: str
    port: int
    node_port: int | None
    type: str


class Lab:
    def __init__(self, cluster: ClusterHandle, namespace: str):
        self.cluster = cluster
        self.ns = namespace
        self.kube = cluster.kube
        self.mode = cluster.mode
        self.notes: list[str] = []
        self.action: list[str] = []

    # ---- recording ------------------------------------------------------
    def note(self, *lines: str) -> None:
        for line in lines:
            log.info("%s", line)
            self.notes.append(line)

    def step(self, what: str) -> None:
        """A step of the experiment, as the article would show the command."""
        log.info("step: %s", what)
        self.action.append(what)

    # ---- workload -------------------------------------------------------
    def deploy_demoapp(self, replicas: int = 1, wait: bool = True) -> list[PodInfo]:
        self.step(f"kubectl -n {self.ns} create deploy demoapp --image={self.cluster.images.demoapp} "
                  f"(replicas={replicas})")
        self.kube.apply(load_manifest("demoapp", IMAGE=self.cluster.images.demoapp, REPLICAS=replicas), self.ns)
        if wait:
            self.kube.rollout("demoapp", self.ns)
        return self.pods()

    def pods(self) -> list[PodInfo]:
        return self.kube.ready_pods(DEMO_SELECTOR, self.ns)

    def scale(self, replicas: int, service: str | None = None) -> list[PodInfo]:
        """Scale the demo app, wait for the rollout and, if given, the Service's endpoints."""
        self.step(f"kubectl -n {self.ns} scale deployment demoapp --replicas={replicas}")
        self.kube.scale("demoapp", replicas, self.ns)
        self.kube.rollout("demoapp", self.ns)
        if service:
            self.kube.wait_endpoints(service, self.ns, DEMO_SELECTOR, DEMO_PORT, replicas=replicas)
        return self.pods()

    def service(self, kind: str, name: str, **values) -> Service:
        """Apply manifests/service-<kind>.yaml and return its addresses."""
        self.step(f"kubectl -n {self.ns} apply -f service-{kind}.yaml (name={name}"
                  + "".join(f", {k}={v}" for k, v in values.items()) + ")")
        self.kube.apply(load_manifest(f"service-{kind}", NAME=name, **values), self.ns)
        return self.read_service(name)

    def read_service(self, name: str) -> Service:
        s = self.kube.service(name, self.ns)
        port = s.spec.ports[0] if s.spec.ports else None
        return Service(name, self.ns, s.spec.cluster_ip or "", port.port if port else 0,
                       port.node_port if port else None, s.spec.type)

    def wait_endpoints(self, service: str, replicas: int | None = None) -> set[str]:
        return self.kube.wait_endpoints(service, self.ns, DEMO_SELECTOR, DEMO_PORT, replicas=replicas)

    # ---- vantage points ----------------------------------------------------
    def client(self, node: str | Node, name: str = "") -> PodPeer:
        node = node.name if isinstance(node, Node) else node
        self.step(f"kubectl -n {self.ns} run client on node {node} (image {self.cluster.images.toolbox})")
        return PodPeer.start(self.kube, self.ns, node, self.cluster.images.toolbox, name)

    def node(self, node: str | Node) -> NodePeer:
        return self.cluster.node(node.name if isinstance(node, Node) else node)

    def external(self, index: int = 0) -> ExternalPeer:
        return self.cluster.external(index)

    # ---- traffic ----------------------------------------------------------
    def probe(self, peer: Peer, host: str, port: int, n: int = 1, path: str = "/",
              timeout_s: float = 2.0, concurrency: int = 1) -> Sample:
        if self.cluster.is_kind:
            engine.check_egress_guard(self.cluster.runner)
        url = f"http://{host}:{port}{path}"
        self.step(f"from {peer.describe()}: {n} x curl {url}")
        sample = run_probe(peer, url, n=n, timeout_s=timeout_s, concurrency=concurrency,
                           max_duration_s=max(30.0, n * timeout_s / concurrency + 10))
        self.note(sample.summary())
        return sample

    def check(self, experiment: str, peer: Peer, sample: Sample, backends: set[str] | None = None) -> list[str]:
        """Compare the sample with the expectations table (the one assertion path)."""
        try:
            lines = expectations.check(experiment, peer.where, self.mode, sample,
                                       backends=backends, own_ip=peer.ip)
        except expectations.ExpectationFailed as e:
            self.notes.extend(e.lines)
            raise
        self.notes.extend(lines)
        return lines
