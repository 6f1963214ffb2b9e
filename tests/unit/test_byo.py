"""Pure parts of the --byo-kubeconfig path: snapshot diffs, schedulability, pools, junit parsing, consent."""
from types import SimpleNamespace as NS

import pytest

from harness.byo import discover, snapshot, testbed
from harness.lab import ClusterHandle, Images


def test_snapshot_diff_is_empty_for_equal_snapshots():
    snap = {"configmaps": {"kube-proxy": "512"}, "pods": {"kube-proxy-x": "uid=1 restarts=0"}}
    assert snapshot.diff(snap, {k: dict(v) for k, v in snap.items()}) == []


def test_snapshot_diff_names_changed_new_and_gone_objects():
    before = {"configmaps": {"kube-proxy": "512"}, "pods": {"kube-proxy-a": "uid=1 restarts=0"}}
    after = {"configmaps": {"kube-proxy": "977"}, "pods": {"kube-proxy-b": "uid=2 restarts=0"},
             "namespaces": {"metallb-system": "u"}}
    assert snapshot.diff(before, after) == [
        "configmaps/kube-proxy: 512 -> 977",
        "namespaces/metallb-system: new (u)",
        "pods/kube-proxy-a: gone (was uid=1 restarts=0)",
        "pods/kube-proxy-b: new (uid=2 restarts=0)",
    ]


def _node(name, cp=False, ready=True, cordoned=False, taints=()):
    labels = {"node-role.kubernetes.io/control-plane": ""} if cp else {}
    return NS(metadata=NS(name=name, labels=labels),
              status=NS(addresses=[NS(type="InternalIP", address=f"10.0.0.{len(name)}")],
                        conditions=[NS(type="Ready", status="True" if ready else "False")]),
              spec=NS(unschedulable=cordoned, taints=[NS(key=k, effect=e, value=None) for k, e in taints]))


def _fake_kube(nodes):
    return NS(core=NS(list_node=lambda **kw: NS(items=nodes)))


def test_node_infos_say_why_a_node_takes_no_test_pods():
    kube = _fake_kube([_node("cp", cp=True), _node("w1"), _node("w22", cordoned=True),
                       _node("w333", taints=[("gpu", "NoSchedule")]), _node("w4444", ready=False)])
    infos = {n.name: (n.schedulable, n.why_not) for n in discover.node_infos(kube)}
    assert infos == {"cp": (False, "control plane"), "w1": (True, ""), "w22": (False, "cordoned"),
                     "w333": (False, "tainted gpu:NoSchedule"), "w4444": (False, "NotReady")}


def test_preflight_refuses_a_cluster_with_one_schedulable_worker(monkeypatch):
    kube = _fake_kube([_node("cp", cp=True), _node("w1"), _node("w22", cordoned=True)])
    monkeypatch.setattr(discover, "connect", lambda kc, ctx: (kube, "https://x:6443"))
    with pytest.raises(discover.ByoError, match=r"1 schedulable worker node\(s\) \(w1; not schedulable: "
                                                r"cp: control plane; w22: cordoned\)"):
        discover.preflight("kc", None, None)


def test_preflight_refuses_an_explicit_mode_the_cluster_does_not_run(monkeypatch):
    kube = _fake_kube([_node("cp", cp=True), _node("w1"), _node("w22")])
    monkeypatch.setattr(discover, "connect", lambda kc, ctx: (kube, "https://x:6443"))
    monkeypatch.setattr(discover, "proxy_mode", lambda k: ("iptables", {"ConfigMap": "iptables"}))
    assert discover.preflight("kc", None, None).mode == "iptables"
    with pytest.raises(discover.ByoError, match="runs kube-proxy in iptables mode"):
        discover.preflight("kc", None, ["nftables"])


def test_preflight_round_trips_through_json():
    pre = discover.Preflight("kc", None, "https://x", "nftables", {"ConfigMap": "nftables"},
                             [discover.NodeInfo("cp", "10.0.0.1", "control-plane", False, "control plane")])
    assert discover.Preflight.from_json(pre.to_json()) == pre


def test_metallb_ranges_become_networks():
    assert discover._networks_of(["172.18.255.200-172.18.255.215", "10.5.0.0/24"]) == [
        "172.18.255.200/29", "172.18.255.208/29", "10.5.0.0/24"]


def test_junit_counts_and_skip_reasons(tmp_path):
    (tmp_path / "j.xml").write_text(
        '<testsuites><testsuite><testcase classname="a" name="t1"/>'
        '<testcase classname="a" name="t2"><skipped message="needs ipvs"/></testcase>'
        '<testcase classname="a" name="t3"><failure message="x"/></testcase></testsuite></testsuites>')
    assert testbed.parse_junit(tmp_path / "j.xml") == (1, 1, 1, [("a::t2", "needs ipvs")])


def _handle(tmp_path, **kw):
    return ClusterHandle(mode="iptables", name="byo", kube=None, nodes=[], images=Images("d", "t"),
                         changes_log=tmp_path / "changes", **kw)


def test_changes_to_a_kubeconfig_cluster_skip_without_consent(tmp_path):
    with pytest.raises(pytest.skip.Exception, match="--allow-cluster-changes"):
        _handle(tmp_path).needs_change("restart kube-proxy")
    assert not (tmp_path / "changes").exists()


def test_consented_changes_are_recorded_for_the_summary(tmp_path):
    _handle(tmp_path, allow_changes=True).needs_change("restart kube-proxy")
    assert (tmp_path / "changes").read_text() == "restart kube-proxy\n"


def test_nodes_count_as_local_kind_containers_only_with_their_internal_ip_on_the_kind_network():
    from harness.runner import FakeRunner
    nodes = [discover.NodeInfo("n1", "172.18.0.2", "control-plane", False), discover.NodeInfo("n2", "172.18.0.3", "worker", True)]
    r = FakeRunner().on(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", "n1"],
                        '{"kind": {"IPAddress": "172.18.0.2"}}')
    r.on(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", "n2"], '{"kind": {"IPAddress": "172.18.0.3"}}')
    assert discover.local_kind_nodes(nodes, r)[0] is True
    other = FakeRunner().on(["docker", "inspect"], '{"bridge": {"IPAddress": "172.17.0.2"}}')
    local, why = discover.local_kind_nodes(nodes, other)
    assert not local and "has no address on the kind network" in why
    missing = FakeRunner().on(["docker", "inspect"], "", returncode=1)
    assert discover.local_kind_nodes(nodes, missing) == (False, "n1 is not a container on this machine")


def test_this_host_as_external_client_of_a_remote_cluster_uses_its_source_address():
    from harness.peers import ExternalPeer
    from harness.runner import FakeRunner
    r = FakeRunner().on(["ip", "-o", "route", "get", "10.1.2.3"], "10.1.2.3 via 192.168.1.1 dev eth0 src 192.168.1.7 uid 0")
    assert ExternalPeer.host(r, towards="10.1.2.3").ip == "192.168.1.7"


def test_a_snapshot_the_credentials_may_not_take_is_a_clear_error():
    from kubernetes.client.rest import ApiException

    from harness.byo import snapshot

    class Core:
        def list_namespaced_config_map(self, ns):
            e = ApiException(status=403, reason="Forbidden")
            e.body = ('{"message": "configmaps is forbidden: User \\"dev\\" cannot list resource '
                      '\\"configmaps\\" in API group \\"\\" in the namespace \\"kube-system\\""}')
            raise e
        api_client = None

    kube = type("K", (), {"core": Core()})()
    with pytest.raises(snapshot.SnapshotForbidden, match='cannot list resource "configmaps"'):
        snapshot.take(kube)
