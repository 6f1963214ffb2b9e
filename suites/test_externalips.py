"""externalIPs: the Service answers on an address only where that address lives.

Experiment 13 of the Services article ("外部IP"): kube-proxy DNATs traffic
for an external IP on every node, but only the node that holds the address
receives it; the other nodes refuse on that port, and when the holder is cut
off nobody answers until it is back.
"""
import pytest

from harness.waits import Wait

SVC = "demoapp-externalip-svc"
PORT = 80


@pytest.mark.cluster_wide  # cuts one node off the network for a while
@pytest.mark.experiment("E13", "externalIPs answer only on the node holding the address")
def test_external_ip_answers_only_on_its_node(lab):
    """A Service with externalIPs set to an address one node holds (a second address on its link, as
    in the article) answers on that address:port from the external client while the other nodes'
    IPs refuse on that port; with that node cut off the address is unreachable, and it answers again
    once the node is back with the same address.
    """
    holder = lab.cluster.workers[-1]
    lab.cluster.may_cut_off(holder)
    # Not the node's own address: in ipvs mode every node binds each external IP to kube-ipvs0, so a
    # node's own address there makes every other node route that node's traffic to itself (seen in the
    # guest: half the answers lost, then the API server unable to reach the node's kubelet).
    address = lab.cluster.spare_address()
    pods = lab.deploy_demoapp(replicas=2)
    with lab.cluster.extra_address(holder, address):
        lab.step(f"docker exec {holder.name} ip addr add {address} dev eth0  (the node's second address)")
        svc = lab.service("externalip", SVC, PORT=PORT, EXTERNAL_IP=address)
        lab.wait_endpoints(SVC, replicas=len(pods))
        names = {p.name for p in pods}
        lab.note(f"{SVC}: ClusterIP {svc.cluster_ip}, externalIPs [{address}] (on node {holder.name})")

        ext = lab.external()
        lab.converge(ext, address, PORT, names)
        sample = lab.probe(ext, address, PORT, n=20)
        lab.check("externalip-holder", ext, sample)
        for node in lab.cluster.nodes:
            if node.name != holder.name:
                sample = lab.probe(ext, node.ip, PORT, n=3)
                lab.check("externalip-other-node", ext, sample)

        with lab.cluster.cut_off(holder):
            lab.step(f"docker exec {holder.name} ip link set eth0 down  (the node is cut off)")
            sample = lab.probe(ext, address, PORT, n=3, timeout_s=1.0)
            lab.check("externalip-node-cut", ext, sample)
        lab.step(f"docker exec {holder.name} ip link set eth0 up  (back, same address)")
        Wait(f"{holder.name} to be Ready again").until(
            lambda: lab.kube.core.read_node(holder.name).status.conditions,
            lambda conds: any(c.type == "Ready" and c.status == "True" for c in conds))
        lab.converge(ext, address, PORT, names, timeout=90)
        sample = lab.probe(ext, address, PORT, n=20)
        lab.check("externalip-holder", ext, sample)
