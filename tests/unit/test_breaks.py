"""The deliberate breaks: parsing, what each one changes, and that a broken cluster is never reused."""
import json

import pytest
import yaml

from harness import breaks
from harness.cluster import KindCluster


def test_break_names_parse_comma_separated_without_repeats():
    got = breaks.parse(["sticky-sessions,dns-down", "sticky-sessions"])
    assert [b.name for b in got] == ["sticky-sessions", "dns-down"]
    assert breaks.parse(None) == ()


def test_unknown_break_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown break.*masquerade-all"):
        breaks.parse(["masquerade"])


def test_every_break_names_experiments_that_must_fail_and_does_something():
    for b in breaks.BREAKS.values():
        assert (b.must_fail or b.byo) and all(e.startswith("E") for e in b.must_fail), b.name
        assert any([b.kube_proxy, b.on_cluster, b.on_namespace, b.on_service, b.on_patch, b.skip_restart,
                    b.scheduler_unapplied]), b.name


def test_wrong_mode_asks_kube_proxy_for_the_other_mode():
    wrong = breaks.parse(["wrong-mode"])
    assert breaks.kube_proxy_patch(wrong, "iptables") == {"mode": "nftables"}
    assert breaks.kube_proxy_patch(wrong, "nftables") == {"mode": "iptables"}


def test_masquerade_all_is_set_where_kube_proxy_reads_it():
    # A top-level masqueradeAll is silently ignored by kube-proxy v1.34.
    patch = breaks.kube_proxy_patch(breaks.parse(["masquerade-all"]), "iptables")
    assert patch["iptables"]["masqueradeAll"] is True and "masqueradeAll" not in patch


def test_sticky_sessions_pins_services_but_not_externalname():
    sticky = breaks.BREAKS["sticky-sessions"].on_service
    assert sticky(None, {"type": "NodePort"})["sessionAffinity"] == "ClientIP"
    assert sticky(None, {"sessionAffinity": "None"})["sessionAffinity"] == "ClientIP"
    assert "sessionAffinity" not in sticky(None, {"type": "ExternalName"})


def test_lost_patches_keep_only_unrelated_fields():
    lose = breaks.BREAKS["policy-patches-lost"].on_patch
    assert lose(None, {"externalTrafficPolicy": "Local", "type": "ClusterIP"}) == {"type": "ClusterIP"}


def test_only_cluster_level_breaks_change_a_clusters_identity():
    assert breaks.identity(breaks.parse(["sticky-sessions", "stray-backend"])) == ""
    assert breaks.identity(breaks.parse(["dns-down", "sticky-sessions", "wrong-mode"])) == "dns-down,wrong-mode"


def test_a_cluster_broken_on_purpose_is_not_reused_by_a_healthy_run(tmp_path, monkeypatch):
    from harness import config
    monkeypatch.setattr(config, "CACHE", tmp_path)
    broken = KindCluster(name="c", mode="iptables", damage="dns-down")
    broken.marker.parent.mkdir(parents=True)
    broken.marker.write_text(json.dumps({"config": broken._rendered()}))
    assert broken._same_config()
    assert not KindCluster(name="c", mode="iptables")._same_config()
    yaml.safe_load(broken._rendered())  # still a valid kind config (the note is a comment)


def test_prove_runs_pytest_on_exactly_the_experiments_the_break_names(tmp_path):
    b = breaks.BREAKS["policy-patches-lost"]
    argv = breaks._pytest_argv(b, "nftables", tmp_path, ["-x"])
    assert "--experiments=E05,E08,E09,E11" in argv and "--break=policy-patches-lost" in argv
    assert "--reuse-clusters" in argv  # Service-level damage: a healthy cluster can be shared
    assert "--reuse-clusters" not in breaks._pytest_argv(breaks.BREAKS["dns-down"], "iptables", tmp_path, [])
    assert argv[-1] == "-x"


def test_only_a_failure_inside_the_test_counts_as_red():
    from harness.report import Evidence

    def ev(exp, verdict, phase="call", mode="iptables"):
        return Evidence(experiment=exp, mode=mode, title="", claim="", action="", observed=[],
                        verdict=verdict, phase=phase)
    got = breaks._verdicts([ev("E01", "fail"), ev("E02", "fail", phase="setup"), ev("E03", "pass"),
                            ev("E17", "pass"), ev("E17", "fail"), ev("E04", "fail", mode="nftables")], "iptables")
    assert got == {"E01": "fail", "E02": "setup error", "E03": "pass", "E17": "fail"}


def test_ipvs_only_breaks_are_proven_only_in_ipvs_mode():
    assert breaks.BREAKS["kube-ipvs0-empty"].modes == ("ipvs",)
    assert breaks.BREAKS["ipvs-scheduler-unapplied"].modes == ("ipvs",)
    assert "ipvs" not in breaks.BREAKS["service-range-local"].modes


def test_every_break_cluster_prefix_is_a_valid_cluster_name_and_its_own():
    from harness import plugin
    prefixes = [breaks._cluster_prefix(b) for b in breaks.BREAKS.values()]
    for p in prefixes:
        assert plugin._cluster_prefix(p) == p
    assert len(set(p for p, b in zip(prefixes, breaks.BREAKS.values()) if b.changes_cluster)) == \
        sum(b.changes_cluster for b in breaks.BREAKS.values())


def test_prove_lanes_side_by_side_each_keep_a_guest_of_their_own(tmp_path, monkeypatch):
    import threading
    import time as _time

    from harness import cluster, report
    monkeypatch.setattr(breaks.os, "cpu_count", lambda: 2)
    seen, lock, deleted, halted = [], threading.Lock(), [], []

    def fake_run(b, mode, artifacts, extra, quiet, slot=(0, 1), children=None):
        with lock:
            seen.append((b.name, slot))
        _time.sleep(0.05)
        return 1, 0.05
    monkeypatch.setattr(breaks, "_run_break", fake_run)
    monkeypatch.setattr(report, "load", lambda path: [])
    monkeypatch.setattr(cluster.KindCluster, "ours", classmethod(
        lambda cls, name, owner=None: type("C", (), {"delete": lambda self: deleted.append(name),
                                                     "engine": _IdleEngine(name, halted)})()))
    names = ["stray-backend", "sticky-sessions", "policy-patches-lost", "wrong-mode", "dns-down", "kube-ipvs0-empty"]
    breaks.prove("ipvs", names, tmp_path, [], jobs=2)
    assert {s for _, s in seen} <= {(0, 2), (1, 2)} and len({s for _, s in seen}) == 2
    shared = {s for n, s in seen if not breaks.BREAKS[n].changes_cluster}
    assert len(shared) == 1  # the shared lane's breaks reuse one kept cluster, so one guest
    assert sorted(set(deleted)) == ["svc-breaks-ipvs", "svc-breaks-ipvs-g2"]
    assert set(halted) == {("halt if idle", "svc-breaks-ipvs"), ("halt if idle", "svc-breaks-ipvs-g2")}


class _IdleEngine:
    """The engine of a kept cluster: records the halt prove asks for at its end."""
    def __init__(self, name, events):
        self.name, self.events = name, events

    def halt_if_idle(self):
        self.events.append(("halt if idle", self.name))
        return True


def test_the_shared_lanes_kept_cluster_is_gone_before_the_next_lane_starts(tmp_path, monkeypatch):
    from harness import cluster, report
    events = []

    def fake_run(b, mode, artifacts, extra, quiet, slot=(0, 1), children=None):
        events.append(("run", b.name))
        return 1, 0.0
    monkeypatch.setattr(breaks, "_run_break", fake_run)
    monkeypatch.setattr(report, "load", lambda path: [])
    monkeypatch.setattr(cluster.KindCluster, "ours", classmethod(
        lambda cls, name, owner=None: type("C", (), {"delete": lambda self: events.append(("delete", name)),
                                                     "engine": _IdleEngine(name, events)})()))
    breaks.prove("ipvs", ["stray-backend", "sticky-sessions", "wrong-mode"], tmp_path, [], jobs=1)
    assert events[:4] == [("run", "stray-backend"), ("run", "sticky-sessions"),
                          ("delete", "svc-breaks-ipvs"), ("run", "wrong-mode")]
    # at the end: deleted once more (for a stopped run), then the engine it was on halted unless
    # something holds it (asked once per time the cluster was looked up; a halted guest says no)
    assert events[4] == ("delete", "svc-breaks-ipvs") and set(events[5:]) == {("halt if idle", "svc-breaks-ipvs")}


def test_a_signal_to_prove_stops_its_running_pytests_and_starts_no_more():
    import signal
    import threading
    import time as _time
    children, rcs = breaks.Children(), []
    t = threading.Thread(target=lambda: rcs.append(children.run(["sleep", "30"])))
    t.start()
    deadline = _time.monotonic() + 5
    while not children.running and _time.monotonic() < deadline:
        _time.sleep(0.01)
    started = _time.monotonic()
    children.stop(signal.SIGTERM)
    t.join(5)
    assert rcs == [-signal.SIGTERM] and _time.monotonic() - started < 5
    assert children.run(["sleep", "30"]) == 128 + signal.SIGTERM and not children.running
