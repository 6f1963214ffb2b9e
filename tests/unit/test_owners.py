"""Ownership and leases: a live owner is told apart from a dead one and from a reused pid."""
import json
import os
import subprocess

import pytest

from harness import config
from harness.cluster import KindCluster, claim_name
from harness.engine import HostEngine
from harness.owners import Leases, Owner, read_json
from harness.runner import FakeRunner


def _dead_owner() -> Owner:
    p = subprocess.Popen(["true"])
    owner = Owner.of(p.pid)
    p.wait()
    return owner


def test_an_owner_is_alive_while_its_process_runs_and_not_after():
    assert Owner.of().alive()
    assert not _dead_owner().alive()
    me = Owner.of()
    # the same pid with another start time is another process (a pid reused after a crash)
    assert not Owner(me.pid, str(int(me.start) + 1), me.boot).alive()
    assert not Owner(me.pid, me.start, "another-boot").alive()
    assert Owner.from_dict(me.to_dict()) == me and Owner.from_dict({"pid": 1}) is None


def test_leases_keep_live_holders_and_prune_dead_ones(tmp_path):
    leases = Leases(tmp_path / "leases")
    with leases.locked():
        leases.add("live", Owner.of())
        leases.add("dead", _dead_owner())
        assert set(leases.live()) == {"live"}
        assert not (tmp_path / "leases" / "dead.json").exists()
        leases.remove("live")
        assert leases.live() == {}


def test_a_name_held_by_a_live_run_is_not_claimed_twice(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE", tmp_path)
    eng = HostEngine(FakeRunner())  # `kind get clusters` answers nothing
    other = Owner.of(os.getppid())  # a live process that is not us
    me = Owner.of()
    assert claim_name("svc-harness-iptables", other, eng) == "svc-harness-iptables"
    assert claim_name("svc-harness-iptables", me, eng) == "svc-harness-iptables-2"
    assert read_json(tmp_path / "clusters" / "svc-harness-iptables-2.json")["owner"] == me.to_dict()
    assert claim_name("svc-harness-iptables", me, eng) == "svc-harness-iptables-2"  # ours already
    # a dead owner's name is free again
    (tmp_path / "clusters" / "svc-harness-iptables.json").write_text(
        '{"owner": %s}' % __import__("json").dumps(_dead_owner().to_dict()))
    assert claim_name("svc-harness-iptables", me, eng) == "svc-harness-iptables"


def test_a_foreign_cluster_of_that_name_is_never_claimed(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE", tmp_path)
    eng = HostEngine(FakeRunner().on(["kind", "get", "clusters"], stdout="svc-harness-iptables\n")
                     .on(lambda a: a[1:3] == ["get", "clusters"], stdout="svc-harness-iptables\n"))
    assert claim_name("svc-harness-iptables", Owner.of(), eng) == "svc-harness-iptables"
    assert not (tmp_path / "clusters" / "svc-harness-iptables.json").exists()  # start() then refuses it


def test_the_host_guard_goes_only_when_no_container_of_the_harness_is_left(tmp_path, monkeypatch):
    from harness import engine
    monkeypatch.setattr(config, "CACHE", tmp_path)
    (tmp_path / "clusters").mkdir()
    (tmp_path / "clusters" / "svc-harness-iptables.json").write_text("{}")
    plain_kind = [("kind-control-plane", {"io.x-k8s.kind.cluster": "kind", config.OWNER_LABEL: "image-build"})]
    ours = [("svc-harness-iptables-worker", {"io.x-k8s.kind.cluster": "svc-harness-iptables"})]
    client = [("x-ext-0", {config.OWNER_LABEL: "external-client"})]

    def fake(containers, error=None):
        return (FakeRunner().on_api("inspect network", {"Id": "0123456789abcdef"})
                .on_api("list containers on network", containers, error=error)
                .on(["ip", "-o", "route", "show", "default"], stdout="default via 10.0.0.1 dev eth0\n")
                .on(["iptables", "-D"], returncode=1).on(["ip6tables", "-D"], returncode=1))
    for ps_out in (ours + plain_kind, client):
        r = fake(ps_out)
        assert engine.HostEngine(r).remove_guard_if_unused() is False
        assert not any(c[:2] == ["iptables", "-D"] for c in r.calls)
    r = fake(plain_kind)  # a plain kind cluster does not keep the harness's rules on the network
    engine.HostEngine(r).remove_guard_if_unused()
    deleted = [c for c in r.calls if c[:2] == ["iptables", "-D"]]
    assert {c[c.index("--comment") + 1] for c in deleted} == {engine.GUARD_COMMENT, engine.DNS_COMMENT}
    assert all("br-0123456789ab" in c for c in deleted)
    assert ["ip6tables", "-D", *engine.base.v6_rule("br-0123456789ab")] in r.calls
    # An engine that does not answer the listing (e.g. another run's container went between list and
    # inspect) says nothing about what is left: the rules stay.
    r = fake(None, error=ConnectionRefusedError("no engine"))
    assert engine.HostEngine(r).remove_guard_if_unused() is False
    assert not any(c[:2] == ["iptables", "-D"] for c in r.calls)


@pytest.mark.parametrize("nodes_left, deleted", [(None, False), (["c-worker"], False), ([], True)],
                         ids=["engine does not answer", "nodes still there", "gone"])
def test_a_delete_counts_only_when_the_engine_shows_the_nodes_gone(tmp_path, monkeypatch, nodes_left, deleted):
    """kind exits 0 when it cannot reach the engine: the marker must stay then, so a later run or
    `clean` finishes the delete."""
    monkeypatch.setattr(config, "CACHE", tmp_path)
    fake = FakeRunner().on(["kind", "delete"], returncode=0)
    if nodes_left is None:
        fake.on_api("list containers", error=ConnectionRefusedError("no engine"))
    else:
        fake.on_api("list containers", nodes_left)
    owner = Owner.of()
    kc = KindCluster(name="c", mode="iptables", engine=HostEngine(fake), owner=owner)
    kc._write_marker("{}")
    assert kc.delete() is deleted
    assert kc.marker.exists() is not deleted


def test_a_node_build_container_is_left_only_while_its_build_runs():
    """`svc-harness clean` removes a node image's build container whose build was killed."""
    import json
    from harness import config
    from harness.engine.base import _builder_alive
    from harness.owners import Owner
    me = Owner.of().to_dict()
    assert _builder_alive({config.BUILDER_LABEL: json.dumps(me)})
    assert not _builder_alive({config.BUILDER_LABEL: json.dumps({**me, "start": "1"})})  # pid reused
    assert not _builder_alive({})


def test_a_cluster_still_being_made_keeps_the_host_guard(tmp_path, monkeypatch):
    """A live run's marker is written (and the guard installed) before kind makes any container:
    another run ending at that moment must not take the rules from under it."""
    from harness import engine
    monkeypatch.setattr(config, "CACHE", tmp_path)
    (tmp_path / "clusters").mkdir()
    marker = tmp_path / "clusters" / "bench-nftables.json"

    def fake():
        return (FakeRunner().on_api("inspect network", {"Id": "0123456789abcdef"})
                .on_api("list containers on network", [])  # kind has not made the nodes yet
                .on(["ip", "-o", "route", "show", "default"], stdout="default via 10.0.0.1 dev eth0\n")
                .on(["iptables", "-D"], returncode=0).on(["ip6tables", "-D"], returncode=0))
    marker.write_text(json.dumps({"owner": Owner.of().to_dict(), "engine": "host"}))
    r = fake()
    assert engine.HostEngine(r).remove_guard_if_unused() is False
    assert not any(c[:2] == ["iptables", "-D"] for c in r.calls)
    # A dead owner's marker (a crashed run), a guest cluster's, or one cut short does not keep them.
    dead = {"pid": 1, "start": "0", "boot": "gone"}
    for content in (json.dumps({"owner": dead, "engine": "host"}),
                    json.dumps({"owner": Owner.of().to_dict(), "engine": "guest"}), '["not", "an object"]'):
        marker.write_text(content)
        r = fake()
        assert engine.HostEngine(r).remove_guard_if_unused() is True, content


def test_the_host_guard_lock_is_reentrant_within_a_process(tmp_path, monkeypatch):
    """A signal handler's clean-up runs on the thread that may hold the lock already."""
    from harness.engine import base
    monkeypatch.setattr(config, "CACHE", tmp_path)
    with base._guard_lock():
        inner = base._guard_lock()
        inner.timeout = 0.5
        with inner:  # a second flock on another open file of the same path would time out here
            pass
