"""ExternalName Services: a DNS CNAME, nothing else.

Experiment 12 of the Services article ("ExternalName"): no ClusterIP, no
selector, no Endpoints; cluster DNS answers with a CNAME to `externalName`.
Pointed at another Service's in-cluster name, traffic never leaves the cluster.
"""
import pytest
from kubernetes.client.exceptions import ApiException

from harness.waits import Wait

TARGET = "demoapp-svc"
ALIAS = "demoapp-external"


@pytest.mark.experiment("E12", "ExternalName: a CNAME, no ClusterIP/selector/Endpoints; type change allocates an IP")
def test_externalname_is_a_cname(lab):
    """An ExternalName Service has no ClusterIP, no selector and no Endpoints; a DNS query from a pod
    returns a CNAME to its externalName (here another Service's in-cluster name), so an HTTP request
    to the alias reaches the demo app; changing the type to ClusterIP allocates an IP.
    """
    pods = lab.deploy_demoapp(replicas=1)
    lab.service("clusterip", TARGET)
    lab.wait_endpoints(TARGET, replicas=1)
    target_fqdn = f"{TARGET}.{lab.ns}.svc.cluster.local"
    alias_fqdn = f"{ALIAS}.{lab.ns}.svc.cluster.local"
    alias = lab.service("externalname", ALIAS, EXTERNAL_NAME=target_fqdn)

    spec = lab.kube.service(ALIAS, lab.ns).spec
    lab.note(f"{ALIAS}: type={spec.type} clusterIP={spec.cluster_ip} selector={spec.selector} "
             f"externalName={spec.external_name}")
    assert alias.type == "ExternalName" and spec.cluster_ip in (None, "") and not spec.selector
    with pytest.raises(ApiException) as no_endpoints:
        lab.kube.endpoints(ALIAS, lab.ns)
    assert no_endpoints.value.status == 404, f"expected no Endpoints object, got {no_endpoints.value}"
    lab.note(f"kubectl get endpoints {ALIAS}: NotFound")

    client = lab.client(lab.cluster.workers[0])
    # Every CoreDNS replica must know the new Service: ask several times in a row.
    dig = f"for i in 1 2 3 4 5 6; do dig +short +time=2 +tries=1 {alias_fqdn} CNAME; done"
    answers = Wait(f"every cluster DNS answer for {alias_fqdn} to be a CNAME").until(
        lambda: client.exec(["sh", "-c", dig]).stdout.split(),
        lambda out: len(out) == 6 and len(set(out)) == 1)
    lab.note(f"dig +short {alias_fqdn} CNAME", f"  {answers[0]}")
    assert answers[0] == target_fqdn + ".", f"expected CNAME {target_fqdn}., got {answers[0]!r}"

    # The trailing dot makes the name absolute (no search-list expansion by the client's resolver).
    lab.await_traffic(client, alias_fqdn + ".", 80, lambda s: len(s.ok_records) == len(s.records),
                      "every request through the alias answered", n=10)
    sample = lab.probe(client, alias_fqdn + ".", 80, n=20)
    lab.check("externalname-http", client, sample)
    assert set(sample.backends()) == {pods[0].name}

    lab.patch_service(ALIAS, type="ClusterIP", externalName=None, selector={"app": "demoapp"},
                      ports=[{"name": "http", "port": 80, "targetPort": 80}])
    changed = lab.read_service(ALIAS)
    lab.note(f"{ALIAS}: type={changed.type} clusterIP={changed.cluster_ip}")
    assert changed.type == "ClusterIP" and changed.cluster_ip not in ("", "None", None)
