"""--byo-kubeconfig discovery finds the LoadBalancer provider without side effects outside the cluster."""
import json
from types import SimpleNamespace

import pytest

from harness.byo import discover


class FakeKube:
    def __init__(self, pools=(), bgp=()):
        self.objects = {"ipaddresspools.metallb.io": [{"spec": {"addresses": list(pools)}}] if pools else [],
                        "bgpadvertisements.metallb.io": [{"metadata": {"name": n}} for n in bgp]}

    def kubectl(self, verb, kind, *args, check=True):
        return SimpleNamespace(ok=True, stdout=json.dumps({"items": self.objects[kind]}))


@pytest.fixture
def probes(monkeypatch):
    made = []
    monkeypatch.setattr(discover, "probe_load_balancer", lambda kube, ns: made.append(ns) or "203.0.113.7")
    return made


def test_metallb_in_layer2_is_read_not_probed(probes):
    provider, detail, nets = discover.load_balancer(FakeKube(pools=["172.18.255.200-172.18.255.250"]), "ns", False)
    assert provider == "metallb" and not probes
    assert nets and all(n.startswith("172.18.255.") for n in nets)


def test_no_metallb_creates_no_load_balancer_without_allow_changes(probes):
    provider, detail, nets = discover.load_balancer(FakeKube(), "ns", False)
    assert (provider, nets, probes) == ("none", [], [])
    assert "--allow-cluster-changes" in detail


def test_metallb_over_bgp_needs_allow_changes(probes):
    kube = FakeKube(pools=["10.0.0.0/28"], bgp=["to-routers"])
    assert discover.load_balancer(kube, "ns", False)[0] == "none"
    assert discover.load_balancer(kube, "ns", True)[0] == "metallb" and not probes


def test_other_provider_is_probed_only_with_allow_changes(probes):
    provider, detail, nets = discover.load_balancer(FakeKube(), "ns", True)
    assert (provider, nets, probes) == ("other", ["203.0.113.7/32"], ["ns"])
