"""LoadBalancer Services: a NodePort plus an external address, if a provider gives one.

Experiments 10-11 of the Services article ("应用LoadBalancer Service资源"):
without a cloud provider EXTERNAL-IP stays <pending> yet the Service works as
a NodePort (the article's `80:31816/TCP`); with one (MetalLB here, with a pool
carved from the kind network) the address answers from outside, follows the
traffic policies, and honours loadBalancerSourceRanges.
"""
import ipaddress
import time

import pytest

from harness.loadbalancer import NO_PROVIDER_CLASS
from harness.waits import Wait

SVC = "demoapp-lb-svc"


def _ingress_ip(lab, name):
    ingress = lab.kube.service(name, lab.ns).status.load_balancer.ingress or []
    return ingress[0].ip if ingress else None


def _get_svc_line(lab, svc, external):
    return (f"{svc.name}   LoadBalancer   {svc.cluster_ip}   {external}   "
            f"{svc.port}:{svc.node_port}/TCP")


@pytest.mark.experiment("E10", "No LoadBalancer provider: EXTERNAL-IP pending, ClusterIP and NodePort work")
def test_without_provider_external_ip_stays_pending(lab):
    """With no provider for the Service, EXTERNAL-IP stays pending, and the Service still gets a
    ClusterIP and a NodePort that both answer.

    Where MetalLB is installed, the Service asks for a loadBalancerClass no provider serves, which
    is exactly the "no provider" situation for that Service.
    """
    pods = lab.deploy_demoapp(replicas=2)
    spec = {"loadBalancerClass": NO_PROVIDER_CLASS} if lab.cluster.lb_provider != "none" else {}
    svc = lab.service("loadbalancer", SVC, spec=spec)
    lab.wait_endpoints(SVC, replicas=len(pods))
    deadline = time.monotonic() + 10  # a provider assigns within a second or two; 10 s is generous
    while time.monotonic() < deadline:
        assert _ingress_ip(lab, SVC) is None, f"expected no external IP, got {_ingress_ip(lab, SVC)}"
        time.sleep(1)
    lab.note(_get_svc_line(lab, svc, "<pending>"))
    assert svc.cluster_ip and svc.node_port, f"expected a ClusterIP and a NodePort, got {svc}"

    ext = lab.external()
    for node in lab.cluster.nodes:
        sample = lab.probe(ext, node.ip, svc.node_port, n=5)
        lab.check("lb-pending-nodeport", ext, sample)
    client = lab.client(lab.cluster.workers[0])
    # "covered" needs every backend to answer: with random choice over 2 pods, 5 requests all
    # went to one pod 1 time in 16 (seen); 30 requests miss one with probability 2 * 2^-30.
    sample = lab.probe(client, svc.cluster_ip, svc.port, n=30)
    lab.check("clusterip-scaled", client, sample, backends={p.name for p in pods})


@pytest.mark.experiment("E11", "MetalLB: an address from the kind network, traffic policies, source ranges")
def test_metallb_address_policies_and_source_ranges(lab):
    """With MetalLB and a pool inside the kind network an address is assigned, only the node MetalLB
    announces it from answers ARP for it (in ipvs: needs strictARP), and it answers the external
    client; externalTrafficPolicy Cluster spreads over every node's pods and hides the client IP from
    remote pods, Local serves from the announcing node's pods with the real client IP; and
    loadBalancerSourceRanges admits the listed client while another client gets no answer.
    """
    if lab.cluster.lb_provider != "metallb":
        pytest.skip(f"no MetalLB in this cluster (LoadBalancer provider: {lab.cluster.lb_provider}; "
                    "--lb-provider=none, or a --byo-kubeconfig cluster without it)")
    pods = lab.deploy_demoapp(replicas=max(3, len(lab.cluster.workers)))
    names = {p.name for p in pods}
    svc = lab.service("loadbalancer", SVC)
    lab.wait_endpoints(SVC, replicas=len(pods))
    lb_ip = Wait(f"MetalLB to assign an address to {SVC}", timeout=60).until(lambda: _ingress_ip(lab, SVC))
    lab.note(_get_svc_line(lab, svc, lb_ip))
    lab.cluster.assert_local(lb_ip)
    if lab.cluster.node_containers:
        assert ipaddress.ip_address(lb_ip) in ipaddress.ip_network(lab.cluster.kind_subnet())
    lab.wait_programmed(lb_ip)

    ext, other = lab.external(0), lab.external(1)
    if ext.container:  # on the nodes' link: L2 mode means the announcing node alone answers ARP
        # Both read in each poll: MetalLB may move the announcement while its speakers converge.
        announcers, answering = Wait(
            f"MetalLB to announce {lb_ip} from one node (its ServiceL2Status), and only that node to "
            f"answer ARP for it (last seen: announcing nodes, ARP answerers)", timeout=90, interval=2).until(
            lambda: (lab.lb_announcers(SVC), lab.arp_answerers(ext, lb_ip)),
            lambda seen: len(seen[0]) == 1 and seen[1] == seen[0])
        lab.note(f"MetalLB announces {lb_ip} from {', '.join(announcers)}; ARP answers from: "
                 f"{', '.join(sorted(answering))}")
    lab.converge(ext, lb_ip, svc.port, names)
    sample = lab.probe(ext, lb_ip, svc.port, n=60)
    lab.check("lb-address", ext, sample, backends=names)
    lab.check("etp-cluster-one-node", ext, sample, backends=names)
    # Under Cluster some answers come from pods on other nodes than the one MetalLB chose; those
    # see a node's address. (Which node announces is MetalLB's choice; any remote pod counts.)
    assert ext.ip not in set(sample.client_ips()) or len(set(sample.client_ips())) > 1

    lab.patch_service(SVC, externalTrafficPolicy="Local")
    local = Wait("answers through the LoadBalancer IP to come from one node's pods only (Local)",
                 timeout=90, interval=2).until(
        lambda: lab.probe(ext, lb_ip, svc.port, n=20, timeout_s=1.0),
        lambda s: len(s.ok_records) == len(s.records) and len({_node_of(lab, n) for n in s.backends()}) == 1)
    node = _node_of(lab, next(iter(local.backends())))
    sample = lab.probe(ext, lb_ip, svc.port, n=30)
    lab.check("etp-local-backend-node", ext, sample, backends=lab.pods_on(node))
    lab.note(f"Local: MetalLB announces {lb_ip} from {node}; its pods saw the client's own IP {ext.ip}")

    lab.patch_service(SVC, loadBalancerSourceRanges=[f"{ext.ip}/32"])
    lab.await_blocked(other, lb_ip, svc.port)
    denied = lab.probe(other, lb_ip, svc.port, n=3, timeout_s=1.0)
    lab.check("lb-source-range-denied", other, denied)
    allowed = lab.probe(ext, lb_ip, svc.port, n=10)
    lab.check("lb-source-range-allowed", ext, allowed)


def _node_of(lab, pod_name):
    return next(p.node for p in lab.pods() if p.name == pod_name)
