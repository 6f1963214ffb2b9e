"""Which upstream `[sig-network] Services` specs check what each article experiment checks (data).

Spec names are the specs' own texts without "[sig-network] Services " (see
test/e2e/network/service.go at the pinned version). `only_here` says what the
experiment checks that none of those specs does; with no specs it is the whole
claim. Read from the spec sources, not guessed from titles: e.g. upstream's
ETP=Local NodePort spec does compare the source IP a backend sees.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Coverage:
    experiment: str
    specs: tuple[str, ...]
    only_here: str = ""


COVERAGE = [
    Coverage("E00", (), "node count and readiness, CoreDNS answering, pod-to-pod across nodes, kube-proxy "
                        "running in the requested mode on every node"),
    Coverage("E01", ("should be rejected when no endpoints exist",
                     "should be rejected for evicted pods (no endpoints exist)"),
             "the empty Endpoints object itself"),
    Coverage("E02", ("should serve a basic endpoint from pods",
                     "should preserve source pod IP for traffic thru service cluster IP [LinuxOnly]"),
             "the answer naming the pod (its name and IP)"),
    Coverage("E03", ("should serve a basic endpoint from pods", "should be able to up and down services"),
             "scaling a Deployment 1 -> 3 -> 1 -> 0 with EndpointSlices and traffic checked at each step"),
    Coverage("E04", (), "how load spreads: uniform random (chi-square) in iptables/nftables, strict rotation "
                        "in ipvs"),
    Coverage("E05", ("should have session affinity work for service with type clusterIP [LinuxOnly]",
                     "should be able to switch session affinity for service with type clusterIP [LinuxOnly]",
                     "should have session affinity timeout work for service with type clusterIP [LinuxOnly]")),
    Coverage("E06", ("should be able to create a functioning NodePort service", "should prevent NodePort collisions",
                     "should check NodePort out-of-range", "should release NodePorts on delete"),
             "the NodePort answering on every node's IP from a client outside the cluster"),
    Coverage("E07", (), "under externalTrafficPolicy Cluster a backend on another node sees a node IP, "
                        "not the external client's"),
    Coverage("E08", ("should support externalTrafficPolicy=Local for type=NodePort",
                     "should implement NodePort and HealthCheckNodePort correctly when ExternalTrafficPolicy changes"),
             "no answer from nodes without a local pod, seen from an external client"),
    Coverage("E09", ("should respect internalTrafficPolicy=Local Pod to Pod",
                     "should respect internalTrafficPolicy=Local Pod (hostNetwork: true) to Pod",
                     "should respect internalTrafficPolicy=Local Pod and Node, to Pod (hostNetwork: true)")),
    Coverage("E10", (), "a LoadBalancer Service without a provider stays pending while ClusterIP and NodePort "
                        "answer"),
    Coverage("E11", (), "MetalLB: an address from the kind network, both traffic policies, "
                        "loadBalancerSourceRanges (upstream's LoadBalancer specs need a cloud provider)"),
    Coverage("E12", ("should be able to change the type from ExternalName to ClusterIP",
                     "should be able to change the type from ExternalName to NodePort",
                     "should be able to change the type from ClusterIP to ExternalName",
                     "should be able to change the type from NodePort to ExternalName"),
             "the CNAME answer and an HTTP request through it"),
    Coverage("E13", (), "an externalIP answers only on the node that holds it, not while that node is cut off, "
                        "and again after (upstream's ExternalIP spec uses an address on no node)"),
    Coverage("E14", (), "mode introspection: ConfigMap, /proxyMode and kube-proxy's log agree, the data plane "
                        "holds the Service"),
    Coverage("E15", (), "ping to a ClusterIP: no answer in iptables, no answer or port unreachable in "
                        "nftables, port unreachable in ipvs (kube-proxy's KUBE-IPVS-FILTER)"),
    Coverage("E16", (), "changing the proxy mode through the ConfigMap and a rolling kube-proxy restart"),
    Coverage("E17", (), "the ipvs schedulers' characteristic patterns"),
    Coverage("E18", (), "the engine running the nodes answers the harness only (not a claim of the article)"),
    Coverage("E19", (), "kube-proxy's ipvs deprecation log line in ipvs mode from v1.35 on, never otherwise, and "
                        "its IPVSDeprecation Event that never arrives (not a claim of the article)"),
]
