"""The bench the suites use: a cluster per mode, and a namespace per test.

`ClusterHandle` (session, one per proxy mode) knows the nodes, the API, the
images and the external clients. `Lab` (one per test; in a shared_namespace
module one per module, with a view per test) owns a namespace and offers the
article's steps: deploy the demo app, create a Service, scale, start a client
pod, probe from a vantage point, and check the outcome against
harness.expectations. Everything a test observes is noted for the report.
"""
from __future__ import annotations

import contextlib
import copy
import ipaddress
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from . import config, engine, expectations, modes
from .cluster import KindCluster, Node
from .kube import Kube, PodInfo, load_manifest
from .peers import ExternalPeer, NodePeer, Peer, PodPeer
from .probe import Sample, run_probe
from .runner import DEFAULT, CommandError, Runner

log = logging.getLogger(__name__)

# The demo Deployment's own pods (a ReplicaSet stamps pod-template-hash): a stray pod that merely
# carries app=demoapp is then an extra endpoint the checks notice, not a backend they expect.
DEMO_SELECTOR = "app=demoapp,pod-template-hash"
NODE_PORT_RANGE = (30000, 32767)  # the API server's default --service-node-port-range
DEMO_PORT = 80
PROBE_TIMEOUT_S = 5.0  # per request of a measured sample, on the host (see Lab.probe)


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
    kind: KindCluster | None = None      # None when running against --byo-kubeconfig
    external_mode: str = "container"     # or "host"; "none" when --byo-kubeconfig has no vantage for it
    worker: str = "main"                 # xdist worker id: keeps container names apart
    lb_provider: str = "none"            # "metallb" once installed; with --byo-kubeconfig as discovered
    breaks: tuple = ()                   # deliberate breaks of this run (harness.breaks)
    # --byo-kubeconfig (harness.byo): how nodes are reached ("docker": local kind containers, read
    # only, the probe from a sidecar in the node's network namespace; "pod": a hostNetwork pod in
    # the test namespace), the discovered traffic targets, and the user's consent to changes.
    node_access: str = "docker"
    networks: list[str] | None = None
    allow_changes: bool = False
    changes_log: Path | None = None      # consented changes are appended here for the report
    runner: Runner = field(default=DEFAULT, repr=False)
    engine_note: str = ""                # where it runs, for the report (harness.session fills it)
    slowdown: float = 1.0                # its engine's factor on every wait (harness.waits.slower)
    expected_nodes: int = 0              # nodes it was created with (0: unknown, e.g. --byo-kubeconfig)
    # (this cluster, of the mode's clusters in this run): with a guest per xdist worker a mode has
    # a cluster per guest, and once-per-mode work (upstream's specs) is split between them.
    part: tuple[int, int] = (0, 1)
    _external: dict[int, ExternalPeer] = field(default_factory=dict, repr=False)
    _allowed: list | None = field(default=None, repr=False)
    _node_peers: dict[str, NodePeer] = field(default_factory=dict, repr=False)
    _proxy_config_before: dict | None = field(default=None, repr=False)  # see set_ipvs_scheduler

    @property
    def is_kind(self) -> bool:
        """A kind cluster this harness made (and may change); False with --byo-kubeconfig."""
        return self.kind is not None

    @property
    def node_containers(self) -> bool:
        """Are the nodes local kind containers (docker exec for reads, docker network for cut-offs)?"""
        return self.node_access == "docker"

    @property
    def dataplane_access(self) -> bool:
        """Can the harness read each node's iptables/nft/ipvs state (for programmed-waits, dumps)?"""
        return self.node_containers

    def needs_change(self, what: str) -> None:
        """Skip unless this cluster may be changed outside test namespaces; record the change if so.

        The harness's own clusters always may; a --byo-kubeconfig cluster only with
        --allow-cluster-changes (the caller undoes the change; the run's summary lists it).
        """
        if self.is_kind:
            return
        if not self.allow_changes:
            pytest.skip(f"needs a change outside the test namespaces ({what}); with --byo-kubeconfig the "
                        "cluster is left as found. Pass --allow-cluster-changes to allow it (undone afterwards)")
        log.warning("changing the --byo-kubeconfig cluster with consent: %s", what)
        if self.changes_log:
            with open(self.changes_log, "a") as f:
                f.write(what + "\n")

    @property
    def control_plane(self) -> Node:
        return next(n for n in self.nodes if n.role == "control-plane")

    @property
    def workers(self) -> list[Node]:
        """Nodes that take the test pods (a --byo-kubeconfig cluster's cordoned/tainted ones are left out)."""
        return [n for n in self.nodes if n.role == "worker"]

    def node(self, name: str) -> NodePeer:
        """The node as a vantage point (docker exec). On a --byo-kubeconfig cluster nothing is copied
        into the node: the probe runs in a sidecar container sharing the node's network namespace."""
        if name not in self._node_peers:
            n = next(n for n in self.nodes if n.name == name)
            if not self.node_containers:
                raise RuntimeError(f"no docker access to node {name} (node access: {self.node_access}); "
                                   "use Lab.node, which falls back to a hostNetwork pod")
            if self.is_kind:
                self._node_peers[name] = NodePeer.of(n, self.runner)
            else:
                self._node_peers[name] = NodePeer.with_sidecar(n, f"{self.name}-node-{self.worker}-{n.name}"[:60],
                                                               self.images.toolbox, self.runner)
        return self._node_peers[name]

    def external(self, index: int = 0) -> ExternalPeer:
        """External client number `index` (0 = the article's rocky1); started on first use."""
        if self.external_mode == "none":
            pytest.skip("no external vantage point: the --byo-kubeconfig cluster's nodes are not local kind "
                        "containers; pass --external-client=host to use this machine")
        if index not in self._external:
            if self.external_mode == "host" and index == 0:
                towards = "" if self.node_containers else self.nodes[0].ip
                self._external[index] = ExternalPeer.host(self.runner, towards=towards)
            else:
                self._external[index] = ExternalPeer.start(f"{self.name}-ext-{self.worker}-{index}",
                                                           self.images.toolbox, self.runner)
        return self._external[index]

    def node_peers(self) -> list[NodePeer]:
        return [self.node(n.name) for n in self.nodes]

    def allowed_networks(self) -> list[ipaddress.IPv4Network]:
        """Where the suites may send traffic: the kind network, pod and Service ranges, loopback."""
        if self._allowed is None and self.networks is not None:  # discovered (harness.byo)
            self._allowed = [ipaddress.ip_network(n) for n in self.networks]
        if self._allowed is None:
            nets = [ipaddress.ip_network("127.0.0.0/8")]
            if self.is_kind:
                nets.append(ipaddress.ip_network(engine.network_subnet(self.runner)))
            for n in self.kube.core.list_node().items:
                if n.spec.pod_cidr:
                    nets.append(ipaddress.ip_network(n.spec.pod_cidr))
            self._allowed = nets + self.service_cidrs()
        return self._allowed

    def service_cidrs(self) -> list[ipaddress.IPv4Network]:
        """The IPv4 Service range(s), from the API server's --service-cluster-ip-range."""
        nets = []
        for p in self.kube.core.list_namespaced_pod("kube-system", label_selector="component=kube-apiserver").items:
            for arg in p.spec.containers[0].command or []:
                if arg.startswith("--service-cluster-ip-range="):
                    nets += [ipaddress.ip_network(c) for c in arg.split("=", 1)[1].split(",") if ":" not in c]
        return list(dict.fromkeys(nets))

    def assert_local(self, host: str) -> None:
        """Refuse to send traffic anywhere but this machine's clusters and containers.

        In-cluster DNS names are fine: CoreDNS resolves them itself and forwards nothing.
        """
        if host.rstrip(".").endswith(".svc.cluster.local"):
            return
        ip = ipaddress.ip_address(host)
        if not any(ip in net for net in self.allowed_networks()):
            raise AssertionError(f"refusing to send traffic to {host}: not in the cluster's networks "
                                 f"({', '.join(map(str, self.allowed_networks()))})")

    def set_ipvs_scheduler(self, scheduler: str) -> bool:
        """Switch ipvs.scheduler via the ConfigMap and restart kube-proxy. False when kube-proxy runs
        that scheduler already (rr: its default for an empty setting): nothing edited or restarted.
        The first switch keeps the ConfigMap as it was; restore_ipvs_scheduler() puts that back, so
        several switches in a row cost one restart each and one restore at the end.
        (Callers ask needs_change first: on a --byo-kubeconfig cluster this needs consent.)"""
        if modes.ipvs_scheduler(self.kube) == scheduler:
            return False
        before = modes.set_config(self.kube, {"ipvs": {"scheduler": scheduler}})
        if self._proxy_config_before is None:
            self._proxy_config_before = before
        if self._scheduler_applied:
            modes.restart_all(self.kube)
        return True

    def restore_ipvs_scheduler(self) -> None:
        """Put back the kube-proxy ConfigMap from before the first set_ipvs_scheduler (also where the
        ipvs section or scheduler was absent) and restart kube-proxy; nothing when none switched."""
        if self._proxy_config_before is None:
            return
        modes.put_config(self.kube, self._proxy_config_before)
        self._proxy_config_before = None
        if self._scheduler_applied:
            modes.restart_all(self.kube)

    @property
    def _scheduler_applied(self) -> bool:
        # --break=ipvs-scheduler-unapplied: the ConfigMap changes, no kube-proxy restarts.
        return not any(b.scheduler_unapplied for b in self.breaks)

    @contextlib.contextmanager
    def proxy_mode_changed(self, mode: str):
        """Switch kube-proxy to `mode` via the ConfigMap; yields an iterator over the rolling restart's
        steps, each yielded once that node's kube-proxy runs `mode` and reports healthy. Afterwards the
        ConfigMap is put back and kube-proxy restarted everywhere, and every node is waited for until
        it runs this cluster's mode again. (Callers ask needs_change first.)"""
        # --break=mode-restart-skipped: the ConfigMap changes, no kube-proxy restarts.
        restart = not any(b.skip_restart for b in self.breaks)
        before = modes.set_config(self.kube, {"mode": mode})
        try:
            yield self._restarted_into(mode) if restart else modes.unrestarted_steps(self.kube)
        finally:
            modes.put_config(self.kube, before)
            if restart:
                modes.restart_all(self.kube)
                for peer in self.node_peers():
                    self._await_proxy(peer, self.mode)

    def _restarted_into(self, mode: str):
        for node_name, step in modes.rolling_restart(self.kube):
            self._await_proxy(self.node(node_name), mode)
            yield step

    @staticmethod
    def _await_proxy(node: NodePeer, mode: str) -> None:
        from .waits import Wait
        Wait(f"kube-proxy on {node.name} to run {mode} and report healthy").until(
            lambda: (modes.endpoint_mode(node), modes.healthz(node)), lambda s: s == (mode, "200"))

    def may_cut_off(self, node: Node) -> None:
        """Skip unless `node` can be cut off here (a local container, and consent on --byo-kubeconfig)."""
        if not self.node_containers:
            pytest.skip(f"cutting {node.name} off the network needs the nodes as local kind containers "
                        f"(node access here: {self.node_access})")
        self.needs_change(f"the link of {node.name} ({node.ip}) to the {config.KIND_NETWORK} network taken down, "
                          "brought back up afterwards; a spare address added to that link, removed afterwards")

    def spare_address(self) -> str:
        """An address on the kind network for this mode that no container has: x.y.255.250 + mode
        (Docker hands out addresses from the bottom; MetalLB's pools sit at .200-.247)."""
        net = ipaddress.ip_network(self.kind_subnet())
        return str(net.broadcast_address - 5 + config.PROXY_MODES.index(self.mode))

    @contextlib.contextmanager
    def extra_address(self, node: Node, address: str):
        """Give `node` a second address on its kind-network link, like the article's k81 that "has a
        routable address 10.10.21.249" besides its own; removed afterwards."""
        iface = self._node_iface(node)
        prefix = ipaddress.ip_network(self.kind_subnet()).prefixlen
        self.runner.run(["docker", "exec", node.name, "ip", "addr", "add", f"{address}/{prefix}", "dev", iface],
                        what=f"adding {address} to {node.name}'s {iface}")
        try:
            yield address
        finally:
            self.runner.run(["docker", "exec", node.name, "ip", "addr", "del", f"{address}/{prefix}", "dev", iface],
                            check=False)

    def kind_subnet(self) -> str:
        return engine.network_subnet(self.runner)

    @contextlib.contextmanager
    def cut_off(self, node: Node):
        """Take the node's link to the kind network down (inside its container), then bring it back.

        Not `docker network disconnect`: that frees the node's address in Docker's IPAM, and any
        container started meanwhile on the shared network (another mode's external client, another
        cluster) may take it, so the node could not come back with it (seen: "Address already in use").
        """
        iface = self._node_iface(node)
        gateway = self.runner.run(["docker", "exec", node.name, "ip", "-4", "route", "show", "default"]).stdout.split()
        self.runner.run(["docker", "exec", node.name, "ip", "link", "set", iface, "down"],
                        what=f"cutting {node.name} off the kind network ({iface} down)")
        try:
            yield
        finally:
            self.runner.run(["docker", "exec", node.name, "ip", "link", "set", iface, "up"],
                            what=f"bringing {node.name}'s {iface} back up")
            # The default route went with the link; kindnetd restores its own routes to other nodes.
            if "via" in gateway and not self.runner.run(["docker", "exec", node.name, "ip", "-4", "route", "show",
                                                         "default"]).stdout.strip():
                self.runner.run(["docker", "exec", node.name, "ip", "route", "add", "default", "via",
                                 gateway[gateway.index("via") + 1], "dev", iface])

    def _node_iface(self, node: Node) -> str:
        """The node container's interface holding its kind-network address (eth0 in practice)."""
        out = self.runner.run(["docker", "exec", node.name, "ip", "-o", "-4", "addr", "show", "to", node.ip]).stdout
        if not out.split():
            raise AssertionError(f"{node.name} has no interface with its address {node.ip}")
        return out.split()[1]

    def close(self) -> None:
        for peer in [*self._external.values(), *self._node_peers.values()]:
            peer.close()
        self._external.clear()
        self._node_peers.clear()


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
        self.samples: list[dict] = []   # counts of every checked sample, for the report's charts
        self.action: list[str] = []
        self._node_pods: dict[str, PodPeer] = {}
        self._node_macs: dict[str, str] = {}  # MAC -> node name (arp_answerers)

    def view(self) -> Lab:
        """This Lab for one test of a shared_namespace module: same namespace and client pods, a
        record of its own that starts with this one's (the setup the module's tests share)."""
        other = copy.copy(self)
        other.notes, other.samples, other.action = list(self.notes), list(self.samples), list(self.action)
        return other

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
    def deploy_demoapp(self, replicas: int = 1, wait: bool = True, avoid: Node | None = None,
                       on: Node | None = None) -> list[PodInfo]:
        """The demo app; `avoid` keeps its pods off one node (as a tainted control plane would),
        `on` puts them all on one node."""
        where = f", not on {avoid.name}" if avoid else f", all on {on.name}" if on else ""
        self.step(f"kubectl -n {self.ns} create deploy demoapp --image={self.cluster.images.demoapp} "
                  f"(replicas={replicas}{where})")
        objs = load_manifest("demoapp", IMAGE=self.cluster.images.demoapp, REPLICAS=replicas)
        if avoid or on:
            rule = {"key": "kubernetes.io/hostname", "operator": "NotIn" if avoid else "In",
                    "values": [(avoid or on).name]}
            objs[0]["spec"]["template"]["spec"]["affinity"] = {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
                    rule]}]}}}
        self.kube.apply(objs, self.ns)
        if not wait:
            return self.pods()
        self.kube.rollout("demoapp", self.ns)
        # A list right after the rollout once showed 2 of 3 ready pods (v1.37.2, CI, 2026-12-03).
        from .waits import Wait
        return Wait(f"{replicas} ready demo pods listed in {self.ns} (seen: the pods)").until(
            self.pods, lambda ps: len([p for p in ps if p.ready]) == replicas)

    def pods(self) -> list[PodInfo]:
        return self.kube.ready_pods(DEMO_SELECTOR, self.ns)

    def scale(self, replicas: int, service: str | None = None) -> list[PodInfo]:
        """Scale the demo app, wait for the rollout and, if given, the Service's endpoints."""
        self.step(f"kubectl -n {self.ns} scale deployment demoapp --replicas={replicas}")
        self.kube.scale("demoapp", replicas, self.ns)
        self.kube.rollout("demoapp", self.ns)
        if service:
            self.wait_endpoints(service, replicas=replicas)
        return self.pods()

    def service(self, kind: str, name: str, spec: dict | None = None, **values) -> Service:
        """Apply manifests/service-<kind>.yaml (placeholders from `values`, extra `spec` fields
        merged in) and return its addresses once every node has programmed it."""
        self.step(f"kubectl -n {self.ns} apply -f service-{kind}.yaml (name={name}"
                  + "".join(f", {k}={v}" for k, v in {**values, **(spec or {})}.items()) + ")")
        objs = load_manifest(f"service-{kind}", NAME=name, **values)
        objs[0]["spec"].update(spec or {})
        for b in self.cluster.breaks:
            if b.on_service:
                objs[0]["spec"] = b.on_service(self, objs[0]["spec"])
        self.kube.apply(objs, self.ns)
        svc = self.read_service(name)
        if svc.cluster_ip and svc.cluster_ip != "None":
            if self.cluster.dataplane_access:
                self.wait_programmed(svc.cluster_ip)
            else:  # no data plane to read: every node answers for it (an answer or a refusal, not silence)
                for node in self.node_peers():
                    self.await_traffic(node, svc.cluster_ip, svc.port,
                                       lambda s: bool(s.records) and all(r.ok or r.kind == "refused" for r in s.records),
                                       "answered or refused (the Service is programmed), not silence")
        return svc

    def patch_service(self, name: str, **fields) -> None:
        """`kubectl patch service <name> -p '{"spec": {...}}'`, as the article does it."""
        self.step(f"kubectl -n {self.ns} patch service {name} -p '{json.dumps({'spec': fields})}'")
        for b in self.cluster.breaks:
            if b.on_patch:
                fields = b.on_patch(self, dict(fields))
        self.kube.patch("service", name, self.ns, {"spec": fields})

    def wait_programmed(self, *needles: str, present: bool = True) -> None:
        """Wait until kube-proxy on every node has (or has dropped) a line with all `needles`.

        Probing a ClusterIP before its rules exist would send the packets to the
        default route, i.e. towards the outside, so every new Service waits here.
        Without access to the nodes' data plane (a --byo-kubeconfig cluster elsewhere) callers
        wait on traffic instead (see service, wait_endpoints, wait_affinity).
        """
        if self.cluster.dataplane_access:
            modes.wait_programmed(self.cluster.node_peers(), self.mode, *needles, present=present)

    def free_node_port(self) -> int:
        """A node port no Service in the cluster uses (chosen at random: xdist workers share clusters)."""
        used = {p.node_port for svc in self.kube.core.list_service_for_all_namespaces().items
                for p in (svc.spec.ports or []) if p.node_port}
        rng = random.Random(self.ns)
        return rng.choice([p for p in range(NODE_PORT_RANGE[0], NODE_PORT_RANGE[1] + 1) if p not in used])

    def nodeport_service(self, name: str, kind: str = "nodeport", **values) -> Service:
        """A Service with an explicit, free nodePort (retried if another test took it meanwhile)."""
        for _ in range(3):
            port = self.free_node_port()
            try:
                return self.service(kind, name, NODE_PORT=port, **values)
            except CommandError as e:
                if "already allocated" not in str(e):
                    raise
        raise AssertionError("could not allocate a free node port in 3 tries")

    def pods_on(self, node: str | Node) -> set[str]:
        node = node.name if isinstance(node, Node) else node
        return {p.name for p in self.pods() if p.node == node}

    def read_service(self, name: str) -> Service:
        s = self.kube.service(name, self.ns)
        port = s.spec.ports[0] if s.spec.ports else None
        return Service(name, self.ns, s.spec.cluster_ip or "", port.port if port else 0,
                       port.node_port if port else None, s.spec.type)

    def lb_announcers(self, service: str) -> set[str]:
        """The nodes MetalLB announces the Service's LoadBalancer address from now (one, once its
        speakers agree; none before)."""
        from .loadbalancer import announcing_nodes
        return announcing_nodes(self.kube, service, self.ns)

    def arp_answerers(self, peer: Peer, address: str) -> set[str]:
        """The nodes (by name; an unknown MAC as itself) that answer ARP for `address` as seen
        from `peer`, which must sit on the nodes' link."""
        from .loadbalancer import arp_answers
        self.step(f"from {peer.describe()}: arping -c 3 {address}")
        if not self._node_macs:  # read once: callers poll this
            for node in self.cluster.nodes:
                out = self.node(node).exec(["sh", "-c", "cat /sys/class/net/*/address"]).stdout
                self._node_macs.update({mac.strip().lower(): node.name for mac in out.split()})
        return {self._node_macs.get(mac, mac) for mac in arp_answers(peer, address)}

    def wait_endpoints(self, service: str, replicas: int | None = None) -> set[str]:
        """Endpoints and EndpointSlices equal the ready pods, and every node's data plane has them."""
        eps = self.kube.wait_endpoints(service, self.ns, DEMO_SELECTOR, DEMO_PORT, replicas=replicas)
        if self.cluster.dataplane_access:
            for ep in sorted(eps):
                self.wait_programmed(ep.rsplit(":", 1)[0])
        else:  # every node's ClusterIP path reaches exactly the ready pods
            svc = self.read_service(service)
            names = {p.name for p in self.pods()} or None
            for node in self.node_peers():
                self.converge(node, svc.cluster_ip, svc.port, names)
        return eps

    def wait_affinity(self, svc: Service, client: Peer, on: bool) -> None:
        """Wait until every node has (or has dropped) the Service's sessionAffinity rules; without
        data-plane access, until `client`'s answers come from one backend (or from several)."""
        if self.cluster.dataplane_access:
            needles = (svc.cluster_ip if self.mode == "ipvs" else self.ns, modes.AFFINITY_MARKERS[self.mode])
            self.wait_programmed(*needles, present=on)
        elif on:
            self.await_traffic(client, svc.cluster_ip, svc.port,
                               lambda s: len(s.ok_records) == len(s.records) and len(s.backends()) == 1,
                               "20 answers in a row from one backend", n=20)
        else:
            self.await_traffic(client, svc.cluster_ip, svc.port,
                               lambda s: len(s.ok_records) == len(s.records) and len(s.backends()) > 1,
                               "answers from more than one backend", n=20)

    # ---- vantage points ----------------------------------------------------
    def client(self, node: str | Node, name: str = "") -> PodPeer:
        node = node.name if isinstance(node, Node) else node
        self.step(f"kubectl -n {self.ns} run client on node {node} (image {self.cluster.images.toolbox})")
        return PodPeer.start(self.kube, self.ns, node, self.cluster.images.toolbox, name)

    def node(self, node: str | Node) -> Peer:
        """The node as a vantage point: the node itself, or a hostNetwork pod on it (in this
        namespace) where the nodes of a --byo-kubeconfig cluster are not local containers."""
        name = node.name if isinstance(node, Node) else node
        if self.cluster.node_containers:
            return self.cluster.node(name)
        if name not in self._node_pods:
            self.step(f"kubectl -n {self.ns} run a hostNetwork pod on node {name} (the node's vantage point)")
            index = [n.name for n in self.cluster.nodes].index(name)  # node names need not make pod names
            self._node_pods[name] = PodPeer.start(self.kube, self.ns, name, self.cluster.images.toolbox,
                                                  name=f"node-{index}", host_network=True)
        return self._node_pods[name]

    def node_peers(self) -> list[Peer]:
        return [self.node(n) for n in self.cluster.nodes]

    def external(self, index: int = 0) -> ExternalPeer:
        return self.cluster.external(index)

    # ---- traffic ----------------------------------------------------------
    def engine_api_urls(self) -> list[str]:
        """Every way the cluster could reach the engine running its nodes: each address at which
        the nodes see the engine's machine, on Docker's API ports, as plain HTTP and as TLS."""
        eng = self.cluster.kind.engine
        return [f"{scheme}://{addr}:{port}/version" for addr in eng.api_addresses()
                for port in eng.API_PORTS for scheme in ("http", "https")]

    def http_code(self, peer: Peer | None, url: str, extra: list[str] | None = None) -> str:
        """The HTTP status `url` answers with from `peer` (None: this host), "000" if nothing answers.
        TLS servers are not verified (-k): what counts is whether anything answers at all."""
        argv = ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3", *(extra or []), url]
        res = peer.exec(argv, check=False, timeout=30) if peer else self.cluster.runner.run(argv, check=False,
                                                                                            timeout=30)
        code = res.stdout.strip()[-3:] or "000"
        self.step(f"{'from ' + peer.describe() if peer else 'from this host'}: curl {url} -> {code}")
        return code

    def probe(self, peer: Peer, host: str, port: int, n: int = 1, path: str = "/",
              timeout_s: float | None = None, concurrency: int = 1) -> Sample:
        """Send a measured sample. The default per-request timeout is generous because on two
        cores a concurrent cluster creation can stall a node for seconds (seen: 2 timeouts of
        2 s in 60 during one), and it scales with the engine's slowdown like every wait (seen in
        the UML guest: 1 of 300 requests over 5 s); "no answer" checks pass a short timeout
        explicitly, unscaled."""
        if timeout_s is None:
            from .waits import slowdown
            timeout_s = PROBE_TIMEOUT_S * slowdown()
        if self.cluster.node_containers:
            engine.check_egress_guard(self.cluster.runner)
        self.assert_local(host)
        url = f"http://{host}:{port}{path}"
        self.step(f"from {peer.describe()}: {n} x curl {url}")
        # The summary reaches the report through check(); the log shows it now.
        return run_probe(peer, url, n=n, timeout_s=timeout_s, concurrency=concurrency,
                         max_duration_s=max(30.0, n * timeout_s / concurrency + 10))

    def assert_local(self, host: str) -> None:
        self.cluster.assert_local(host)

    def await_traffic(self, peer: Peer, host: str, port: int, done, want: str, n: int = 3, path: str = "/",
                      timeout: float = config.CONVERGE_TIMEOUT) -> Sample:
        """Probe small samples until done(sample) holds; on timeout the error shows the last one.

        Used only to wait for the data plane to settle (a real readiness signal),
        never to retry a measured sample until it passes.
        """
        from .waits import Wait
        self.assert_local(host)
        return Wait(f"{peer.describe()} -> {host}:{port}{path}: {want}; seen: sample",
                    timeout=timeout, interval=1.0).until(
            lambda: run_probe(peer, f"http://{host}:{port}{path}", n=n, timeout_s=1.0), done)

    def converge(self, peer: Peer, host: str, port: int, backends: set[str] | None,
                 timeout: float = config.CONVERGE_TIMEOUT) -> Sample:
        """Wait until traffic reflects the endpoints: every request answered by exactly
        `backends` (or, for None, every request refused)."""
        if backends is None:
            return self.await_traffic(peer, host, port, lambda s: s.kinds() == {"refused": len(s.records)},
                                      "every request refused", timeout=timeout)
        return self.await_traffic(
            peer, host, port, lambda s: len(s.ok_records) == len(s.records) and set(s.backends()) == backends,
            f"answers from exactly {sorted(backends)}", n=10 * len(backends), timeout=timeout)

    def await_status(self, peer: Peer, host: str, port: int, path: str, status: int) -> Sample:
        """Wait until GET host:port/path answers `status` (e.g. a health-check node port turning 503)."""
        return self.await_traffic(peer, host, port, lambda s: bool(s.records) and s.records[0].status == status,
                                  f"HTTP {status}", n=1, path=path)

    def await_blocked(self, peer: Peer, host: str, port: int) -> Sample:
        """Wait until `peer` gets no answer from host:port (e.g. a source range took effect)."""
        return self.await_traffic(peer, host, port, lambda s: not s.ok_records, "no answer", n=2)

    def check(self, experiment: str, peer: Peer, sample: Sample, backends: set[str] | None = None) -> list[str]:
        """Compare the sample with the expectations table (the one assertion path)."""
        self.samples.append({"check": experiment, "vantage": peer.where, "target": sample.target,
                             "backends": dict(sample.backends()), "outcomes": dict(sample.kinds()),
                             "expected_backends": sorted(backends or ())})
        try:
            lines = expectations.check(experiment, peer.where, self.mode, sample,
                                       backends=backends, own_ip=peer.ip)
        except expectations.ExpectationFailed as e:
            self.notes.extend(e.lines)
            raise
        self.notes.extend(lines)
        return lines
