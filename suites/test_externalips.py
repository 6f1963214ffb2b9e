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
    """A Service with externalIPs set to one node's IP answers on that IP:port from the external
    client while the other nodes' IPs refuse on that port; with that node cut off the address is
    unreachable, and it answers again once the node is back with the same address.
    """
    holder = lab.cluster.workers[-1]
    lab.cluster.may_cut_off(holder)
    pods = lab.deploy_demoapp(replicas=2)
    svc = lab.service("externalip", SVC, PORT=PORT, EXTERNAL_IP=holder.ip)
    lab.wait_endpoints(SVC, replicas=len(pods))
    names = {p.name for p in pods}
    lab.note(f"{SVC}: ClusterIP {svc.cluster_ip}, externalIPs [{holder.ip}] (node {holder.name})")

    ext = lab.external()
    lab.converge(ext, holder.ip, PORT, names)
    sample = lab.probe(ext, holder.ip, PORT, n=20)
    lab.check("externalip-holder", ext, sample)
    for node in lab.cluster.nodes:
        if node.name != holder.name:
            sample = lab.probe(ext, node.ip, PORT, n=3)
            lab.check("externalip-other-node", ext, sample)

    with lab.cluster.cut_off(holder):
        lab.step(f"docker exec {holder.name} ip link set eth0 down  (the node is cut off)")
        sample = lab.probe(ext, holder.ip, PORT, n=3, timeout_s=1.0)
        lab.check("externalip-node-cut", ext, sample)
    lab.step(f"docker exec {holder.name} ip link set eth0 up  (back, same address)")
    Wait(f"{holder.name} to be Ready again").until(
        lambda: lab.kube.core.read_node(holder.name).status.conditions,
        lambda conds: any(c.type == "Ready" and c.status == "True" for c in conds))
    lab.converge(ext, holder.ip, PORT, names, timeout=90)
    sample = lab.probe(ext, holder.ip, PORT, n=20)
    lab.check("externalip-holder", ext, sample)
