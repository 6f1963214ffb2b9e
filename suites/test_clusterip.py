"""ClusterIP Services: endpoints follow the pods, and traffic follows the endpoints.

Experiments 1-5 of the Services article ("应用ClusterIP Service资源"): a
Service is only rules on every node; without endpoints it cannot answer; its
Endpoints object tracks the ready pods the selector matches; iptables spreads
connections at random, ipvs rotates; ClientIP affinity pins a client.
"""
import pytest

from harness.waits import Wait

SVC = "demoapp-svc"


@pytest.mark.experiment("E01", "ClusterIP without matching pods: empty Endpoints, connection refused")
def test_service_without_pods_has_no_endpoints_and_refuses(lab):
    """A Service whose selector matches no pod gets an Endpoints object of the same name with no
    addresses, and a request to its ClusterIP from a node is refused at once (not a timeout).
    """
    svc = lab.service("clusterip", SVC)
    endpoints = Wait(f"Endpoints object {SVC} to exist").until(lambda: lab.kube.endpoints(SVC, lab.ns),
                                                               lambda _: True)
    lab.note(lab.kube.endpoints_line(SVC, lab.ns))
    assert endpoints == set(), f"expected no endpoint addresses, saw {sorted(endpoints)}"
    assert lab.kube.endpoint_slices(SVC, lab.ns) == set()

    node = lab.node(lab.cluster.control_plane)
    sample = lab.probe(node, svc.cluster_ip, svc.port, n=5)
    lab.check("clusterip-no-endpoints", node, sample)


@pytest.mark.experiment("E02", "One matching pod: Endpoints lists it, and it answers with its name and IP")
def test_one_pod_is_the_endpoint_and_answers(lab):
    """Once a Deployment with matching labels exists, the Endpoints object lists the pod's IP:port,
    and a request through the ClusterIP is answered by that pod, naming itself and its IP; the
    ClientIP it reports is the caller's own address.
    """
    svc = lab.service("clusterip", SVC)
    (pod,) = lab.deploy_demoapp(replicas=1)
    assert lab.wait_endpoints(SVC, replicas=1) == {f"{pod.ip}:80"}
    lab.note(lab.kube.endpoints_line(SVC, lab.ns))

    node = lab.node(lab.cluster.control_plane)
    from_node = lab.probe(node, svc.cluster_ip, svc.port, n=5)
    lab.check("clusterip-one-pod", node, from_node, backends={pod.name})
    assert {r.server_ip for r in from_node.ok_records} == {pod.ip}

    client = lab.client(lab.cluster.workers[0])
    from_pod = lab.probe(client, svc.cluster_ip, svc.port, n=5)
    lab.check("clusterip-one-pod", client, from_pod, backends={pod.name})


@pytest.mark.experiment("E03", "Scaling 1 -> 3 -> 1 -> 0 is reflected in Endpoints, EndpointSlices and traffic")
def test_endpoints_and_traffic_follow_scaling(lab):
    """Endpoints and EndpointSlices follow the Deployment's ready pods within a bound as it scales
    1 -> 3 -> 1 -> 0; traffic reaches exactly the ready pods, and with none left requests are
    refused again.
    """
    svc = lab.service("clusterip", SVC)
    lab.deploy_demoapp(replicas=1)
    node = lab.node(lab.cluster.control_plane)
    for replicas in (1, 3, 1):
        pods = lab.scale(replicas, service=SVC)
        lab.note(f"replicas={replicas}: " + lab.kube.endpoints_line(SVC, lab.ns))
        names = {p.name for p in pods}
        lab.converge(node, svc.cluster_ip, svc.port, names)
        sample = lab.probe(node, svc.cluster_ip, svc.port, n=30 * replicas)
        lab.check("clusterip-scaled", node, sample, backends=names)

    lab.scale(0, service=SVC)
    lab.note("replicas=0: " + lab.kube.endpoints_line(SVC, lab.ns))
    lab.converge(node, svc.cluster_ip, svc.port, None)
    sample = lab.probe(node, svc.cluster_ip, svc.port, n=5)
    lab.check("clusterip-no-endpoints", node, sample)


@pytest.mark.experiment("E04", "Load spreads over every backend: random in iptables/nftables, rotation in ipvs")
def test_distribution_over_backends(lab, samples):
    """A sample through the ClusterIP reaches every backend. In iptables and nftables mode the shares
    are consistent with a uniform random choice; in ipvs mode with the default rr scheduler the
    answers rotate strictly over the pods (the article's repeating three-pod sequence).
    """
    replicas = max(3, len(lab.cluster.workers))
    svc = lab.service("clusterip", SVC)
    lab.deploy_demoapp(replicas=replicas)
    names = {p.name for p in lab.scale(replicas, service=SVC)}
    client = lab.client(lab.cluster.workers[0])
    lab.converge(client, svc.cluster_ip, svc.port, names)
    sample = lab.probe(client, svc.cluster_ip, svc.port, n=samples)
    lab.check("distribution", client, sample, backends=names)


@pytest.mark.experiment("E05", "sessionAffinity ClientIP pins a client to one backend; None spreads again")
def test_session_affinity(lab):
    """With sessionAffinity ClientIP every request of one client goes to the same backend; switching
    back to None spreads its requests over the backends again.
    """
    svc = lab.service("clusterip", SVC)
    lab.deploy_demoapp(replicas=3)
    names = {p.name for p in lab.scale(3, service=SVC)}
    client = lab.client(lab.cluster.workers[0])
    lab.converge(client, svc.cluster_ip, svc.port, names)

    lab.patch_service(SVC, sessionAffinity="ClientIP")
    lab.wait_affinity(svc, client, on=True)
    pinned = lab.probe(client, svc.cluster_ip, svc.port, n=60)
    lab.check("affinity-clientip", client, pinned, backends=names)

    lab.patch_service(SVC, sessionAffinity="None")
    lab.wait_affinity(svc, client, on=False)
    spread = lab.probe(client, svc.cluster_ip, svc.port, n=60)
    lab.check("affinity-none", client, spread, backends=names)
