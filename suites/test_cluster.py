"""The cluster itself: what every other experiment stands on.

A 3-node kind cluster (1 control plane + --worker-nodes workers) in the requested
proxy mode: nodes Ready, cluster DNS answering, pods on different nodes
reaching each other, and kube-proxy on every node reporting the mode.
"""
import pytest

from harness import modes


@pytest.mark.experiment("E00", "The cluster: nodes Ready, DNS answers, pods reach each other across nodes")
def test_cluster_is_ready_in_requested_mode(lab, request):
    """Every node (1 control plane + the requested workers) is Ready, CoreDNS answers for the
    kubernetes Service, a pod reaches a pod on another node, and kube-proxy runs on every node in
    the requested mode (its /proxyMode answer).
    """
    nodes = lab.kube.core.list_node().items
    ready = {n.metadata.name: any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)
             for n in nodes}
    lab.note(*(f"{name}: Ready={ok}" for name, ok in sorted(ready.items())))
    if lab.cluster.is_kind:
        # --worker-nodes + 1 on the host engine; the guest engine's size is its own (see the report)
        want = lab.cluster.expected_nodes or request.config.option.worker_nodes + 1
        assert len(nodes) == want, f"expected {want} nodes, found {len(nodes)}"
    assert all(ready.values()), f"nodes not Ready: {ready}"

    proxies = {p.node for p in lab.kube.ready_pods(modes.KUBE_PROXY_SELECTOR, "kube-system")}
    assert proxies == set(ready), f"kube-proxy ready on {sorted(proxies)}, nodes are {sorted(ready)}"

    pods = lab.deploy_demoapp(replicas=max(2, len(lab.cluster.workers)))
    client = lab.client(lab.cluster.workers[0])
    kubernetes_ip = lab.kube.service("kubernetes", "default").spec.cluster_ip
    answer = client.exec(["dig", "+short", "+time=2", "+tries=2", "kubernetes.default.svc.cluster.local"]).stdout.strip()
    lab.note(f"dig +short kubernetes.default.svc.cluster.local -> {answer}")
    assert answer == kubernetes_ip, f"CoreDNS answered {answer!r}, expected {kubernetes_ip}"

    remote = [p for p in pods if p.node != client.node]
    assert remote, f"expected a demo pod on another node than {client.node}: {pods}"
    sample = lab.probe(client, remote[0].ip, 80, n=5)
    lab.check("pod-to-pod", client, sample)

    # Each node's own kube-proxy, asked from the node (or from a hostNetwork pod on it).
    for node in lab.node_peers():
        seen = modes.endpoint_mode(node)
        lab.note(f"{node.name}: /proxyMode -> {seen}")
        assert seen == lab.mode, f"kube-proxy on {node.name} runs {seen!r}; the run asked for {lab.mode!r}"
