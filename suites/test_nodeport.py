"""NodePort Services and traffic policies, seen from a client outside the nodes.

Experiments 6-9 of the Services article ("应用NodePort Service资源"): a node
port opens on every node; `externalTrafficPolicy: Cluster` spreads over all
nodes at the cost of the client's address; `Local` keeps the address but only
serves from the receiving node; `internalTrafficPolicy: Local` does the same
for pods.
"""
import pytest

from harness.loadbalancer import NO_PROVIDER_CLASS
from harness.probe import Sample
from harness.runner import CommandError

SVC = "demoapp-nodeport-svc"


def _spread_demoapp(lab):
    """One demo pod per worker at least (the article's three pods over its workers)."""
    return lab.deploy_demoapp(replicas=max(3, len(lab.cluster.workers)))


@pytest.mark.experiment("E06", "NodePort answers on every node; bad or taken node ports are rejected")
def test_nodeport_on_every_node_and_port_validation(lab):
    """A NodePort Service with an explicit nodePort answers on every node's IP from a client outside
    the cluster; a nodePort outside 30000-32767, or one already taken, is rejected by the API server.
    """
    pods = _spread_demoapp(lab)
    svc = lab.nodeport_service(SVC)
    lab.wait_endpoints(SVC, replicas=len(pods))
    ext = lab.external()
    lab.note(f"{SVC}: type NodePort, port {svc.port}:{svc.node_port}/TCP")
    for node in lab.cluster.nodes:
        sample = lab.probe(ext, node.ip, svc.node_port, n=10)
        lab.check("nodeport-every-node", ext, sample)

    for bad_port, why in ((29999, "not in the valid range"), (svc.node_port, "already allocated")):
        lab.step(f"apply a second NodePort Service with nodePort {bad_port}")
        with pytest.raises(CommandError) as err:
            lab.service("nodeport", f"{SVC}-{bad_port}", NODE_PORT=bad_port)
        message = str(err.value)
        lab.note(f"nodePort {bad_port} rejected: " + next(
            (line.strip() for line in message.splitlines() if "Invalid value" in line or "invalid" in line.lower()),
            message.splitlines()[-1]))
        assert why in message, f"expected the API to reject nodePort {bad_port} as {why!r}; it said:\n{message}"


@pytest.mark.experiment("E07", "externalTrafficPolicy Cluster: all backends serve, remote ones see a node IP")
def test_external_traffic_policy_cluster_hides_client_ip(lab):
    """Under externalTrafficPolicy Cluster (the default) requests to one node reach backends on all
    nodes; a backend on another node sees a node's address instead of the external client's, and
    its access log shows that same address.
    """
    pods = _spread_demoapp(lab)
    svc = lab.nodeport_service(SVC)
    assert lab.kube.service(SVC, lab.ns).spec.external_traffic_policy == "Cluster"
    lab.note("External Traffic Policy:  Cluster")
    lab.wait_endpoints(SVC, replicas=len(pods))
    entry = lab.cluster.workers[0]
    ext = lab.external()
    names = {p.name for p in pods}
    lab.converge(ext, entry.ip, svc.node_port, names)
    sample = lab.probe(ext, entry.ip, svc.node_port, n=60)
    lab.check("etp-cluster-one-node", ext, sample, backends=names)

    remote = {p.name for p in pods if p.node != entry.name}
    remote_sample = Sample(sample.source, sample.target, [r for r in sample.records if r.server_name in remote])
    lab.check("etp-cluster-remote-backend", ext, remote_sample)
    seen = set(remote_sample.client_ips())
    assert seen == {entry.ip}, f"remote backends should see the entry node's IP {entry.ip}; saw {seen}"

    pod = sorted(remote)[0]
    log_lines = [l for l in lab.kube.logs(pod, lab.ns, tail=200).splitlines() if l.startswith(entry.ip + " ")]
    lab.note(f"kubectl -n {lab.ns} logs {pod} | tail -n 2", *log_lines[-2:])
    assert log_lines, f"expected access-log lines of {pod} starting with {entry.ip}"


@pytest.mark.experiment("E08", "externalTrafficPolicy Local: only local pods, real client IP, health check")
def test_external_traffic_policy_local_keeps_client_ip(lab):
    """After patching externalTrafficPolicy to Local, requests to a node reach only that node's pods
    and the pod sees the external client's real IP; a node without a backend (the control plane: its
    taint keeps pods off, and where it takes pods, as in the UML guest, the pods avoid it) does not
    answer; the health-check node port answers 200 on nodes with endpoints and 503 on the others.
    """
    pods = lab.deploy_demoapp(replicas=max(3, len(lab.cluster.workers)), avoid=lab.cluster.control_plane)
    svc = lab.nodeport_service(SVC)
    lab.wait_endpoints(SVC, replicas=len(pods))
    lab.patch_service(SVC, externalTrafficPolicy="Local")
    lab.note("External Traffic Policy:  Local")
    # Health-check node ports exist only for LoadBalancer Services: a twin Service of that type
    # (with a class no provider serves, so it stays a NodePort in practice) exposes it.
    hc_spec = {"externalTrafficPolicy": "Local"}
    if lab.cluster.lb_provider != "none":
        hc_spec["loadBalancerClass"] = NO_PROVIDER_CLASS
    lab.service("loadbalancer", f"{SVC}-hc", spec=hc_spec)
    hc_port = lab.kube.service(f"{SVC}-hc", lab.ns).spec.health_check_node_port
    lab.note(f"HealthCheck NodePort (of the LoadBalancer twin): {hc_port}")
    ext = lab.external()

    for worker in lab.cluster.workers:
        local = lab.pods_on(worker)
        lab.converge(ext, worker.ip, svc.node_port, local)
        sample = lab.probe(ext, worker.ip, svc.node_port, n=20)
        lab.check("etp-local-backend-node", ext, sample, backends=local)
        # The twin's endpoints reach kube-proxy's health server in a sync of their own, which can
        # come after the one that converged the main Service.
        lab.await_status(ext, worker.ip, hc_port, "/healthz", 200)
        health = lab.probe(ext, worker.ip, hc_port, n=3, path="/healthz")
        lab.check("etp-local-hc-backend-node", ext, health)

    cp = lab.cluster.control_plane
    lab.await_status(ext, cp.ip, hc_port, "/healthz", 503)  # kube-proxy there knows it has no endpoint
    sample = lab.probe(ext, cp.ip, svc.node_port, n=3, timeout_s=1.0)
    lab.check("etp-local-no-backend-node", ext, sample)
    health = lab.probe(ext, cp.ip, hc_port, n=3, path="/healthz")
    lab.check("etp-local-hc-empty-node", ext, health)


@pytest.mark.experiment("E09", "internalTrafficPolicy Local: a pod reaches only backends on its own node")
def test_internal_traffic_policy_local(lab):
    """With internalTrafficPolicy Local a client pod reaches only the backends on its own node, and a
    client pod on a node without a backend (the control plane; see E08) gets no answer.
    """
    pods = lab.deploy_demoapp(replicas=max(3, len(lab.cluster.workers)), avoid=lab.cluster.control_plane)
    svc = lab.service("clusterip", "demoapp-svc")
    lab.wait_endpoints("demoapp-svc", replicas=len(pods))
    lab.patch_service("demoapp-svc", internalTrafficPolicy="Local")

    worker = lab.cluster.workers[0]
    local = lab.pods_on(worker)
    client = lab.client(worker)
    lab.converge(client, svc.cluster_ip, svc.port, local)
    sample = lab.probe(client, svc.cluster_ip, svc.port, n=30)
    lab.check("itp-local-own-node", client, sample, backends=local)

    lonely = lab.client(lab.cluster.control_plane, name="client-cp")
    sample = lab.probe(lonely, svc.cluster_ip, svc.port, n=3, timeout_s=1.0)
    lab.check("itp-local-no-backend", lonely, sample)
