"""Unit tests for harness.expectations: table lookup and the assertion path."""
import pytest

from harness import expectations as ex
from harness.probe import ProbeRecord, Sample

POD_IP = "10.244.1.5"


def sample(*recs):
    return Sample(source=f"client-pod@kind-worker ({POD_IP})", target="10.96.12.7:80",
                  records=list(recs), seconds=1.0)


def ok(i, server, client=POD_IP):
    return ProbeRecord(i=i, kind="ok", status=200, server_name=server, client_ip=client,
                       server_ip="10.244.2.9")


def failed(i, kind):
    return ProbeRecord(i=i, kind=kind, error=f"connect: {kind}")


def test_table_is_well_formed():
    for (exp, vantage, mode), expect in ex.EXPECTATIONS.items():
        assert vantage in ex.VANTAGES + (ex.ANY,), exp
        assert mode in ex.MODES + (ex.ANY,), exp
        assert expect.outcomes and set(expect.outcomes) <= ex.OUTCOMES, exp
        assert expect.why and "\n" not in expect.why, exp


def test_lookup_precedence(monkeypatch):
    table = {
        ("e", "*", "*"): ex.Expect((ex.ANSWERS,), "any"),
        ("e", "*", "ipvs"): ex.Expect((ex.ANSWERS,), "mode"),
        ("e", "pod", "*"): ex.Expect((ex.ANSWERS,), "vantage"),
        ("e", "pod", "ipvs"): ex.Expect((ex.ANSWERS,), "both"),
    }
    monkeypatch.setattr(ex, "EXPECTATIONS", table)
    assert ex.expect_for("e", "pod", "ipvs").why == "both"
    assert ex.expect_for("e", "pod", "iptables").why == "vantage"
    assert ex.expect_for("e", "node", "ipvs").why == "mode"
    assert ex.expect_for("e", "node", "nftables").why == "any"


def test_real_table_lookups():
    assert ex.expect_for("distribution", "pod", "ipvs").outcomes == (ex.ANSWERS, ex.ROUND_ROBIN)
    assert ex.expect_for("distribution", "pod", "nftables").outcomes == (ex.ANSWERS, ex.UNIFORM)
    assert ex.expect_for("clusterip-no-endpoints", "node", "ipvs").outcomes == (ex.REFUSED,)
    # An echo reply is never expected: the service-range-local break makes one appear (E15 red).
    assert all("echo reply" not in outcomes for outcomes in ex.PING_OUTCOMES.values())
    assert ex.PING_OUTCOMES["iptables"] == {"no answer"}


def test_missing_entry_raises_clear_keyerror():
    with pytest.raises(KeyError, match="distribution.*external.*entries for it"):
        ex.expect_for("distribution", "external", "ipvs")
    with pytest.raises(KeyError, match="no entries at all"):
        ex.expect_for("no-such-experiment", "pod", "ipvs")
    with pytest.raises(ValueError, match="unknown proxy mode"):
        ex.expect_for("distribution", "pod", "userspace")


def test_failure_kinds():
    refused = sample(failed(0, "refused"), failed(1, "refused"))
    assert ex.check_outcome(ex.REFUSED, refused).ok
    assert ex.check_outcome(ex.NO_ANSWER, refused).ok
    assert not ex.check_outcome(ex.DROPPED, refused).ok
    mixed = sample(failed(0, "timeout"), ok(1, "a"))
    assert not ex.check_outcome(ex.NO_ANSWER, mixed).ok
    assert not ex.check_outcome(ex.ANSWERS, mixed).ok
    assert not ex.check_outcome(ex.ANSWERS, sample()).ok  # no requests proves nothing


def test_backend_outcomes():
    one = sample(*(ok(i, "a") for i in range(5)))
    assert ex.check_outcome(ex.ONE_BACKEND, one).ok
    assert not ex.check_outcome(ex.SPREAD, one).ok
    two = sample(ok(0, "a"), ok(1, "b"))
    assert ex.check_outcome(ex.SPREAD, two).ok
    assert not ex.check_outcome(ex.ONE_BACKEND, two).ok
    assert ex.check_outcome(ex.COVERED, two, backends={"a", "b"}).ok


def test_client_ip_outcomes():
    kept = sample(ok(0, "a"), ok(1, "a"))
    lost = sample(ok(0, "a", client="172.18.0.3"))
    assert ex.check_outcome(ex.CLIENT_IP_KEPT, kept, own_ip=POD_IP).ok
    assert not ex.check_outcome(ex.CLIENT_IP_LOST, kept, own_ip=POD_IP).ok
    assert ex.check_outcome(ex.CLIENT_IP_LOST, lost, own_ip=POD_IP).ok
    with pytest.raises(ValueError, match="own_ip"):
        ex.check_outcome(ex.CLIENT_IP_KEPT, kept)


def test_check_passes_and_returns_evidence():
    s = sample(*(ok(i, "abc"[i % 3]) for i in range(30)))
    lines = ex.check("distribution", "pod", "ipvs", s, backends={"a", "b", "c"})
    assert lines[0] == s.summary()
    assert any("strict rotation over 3 backends" in line for line in lines)


def test_check_failure_shows_expected_and_observed():
    # 90/5/5 over three backends where the table expects a uniform choice.
    names = ["a"] * 270 + ["b"] * 15 + ["c"] * 15
    s = sample(*(ok(i, n) for i, n in enumerate(names)))
    with pytest.raises(ex.ExpectationFailed) as err:
        ex.check("distribution", "pod", "iptables", s, backends={"a", "b", "c"})
    msg = str(err.value)
    assert isinstance(err.value, AssertionError)
    assert "distribution [pod, iptables]: client-pod@kind-worker (10.244.1.5) -> 10.96.12.7:80" in msg
    assert "expected: answers, uniform -- iptables picks" in msg
    assert "FAIL uniform" in msg and "ok   answers" in msg
    assert "observed: " + s.summary() in msg
    assert "ServerName: a" in msg
    assert "backends: a=270, b=15, c=15" in msg
    assert f"client IPs seen: {POD_IP}=300" in msg
    assert err.value.lines[0] == s.summary()


def test_check_failure_for_refused_shows_what_answered():
    s = sample(ok(0, "web-1"), failed(1, "refused"))
    with pytest.raises(ex.ExpectationFailed, match=r"(?s)REJECTs.*1 of 2 requests were refused.*<refused"):
        ex.check("clusterip-no-endpoints", "pod", "nftables", s)


def test_the_ipvs_deprecation_is_expected_in_ipvs_from_1_35_only():
    from harness.expectations import release_claim_holds
    assert release_claim_holds("ipvs-deprecation", "ipvs", "v1.37.2")
    assert release_claim_holds("ipvs-deprecation", "ipvs", "v1.35.0-gke.1")
    assert not release_claim_holds("ipvs-deprecation", "ipvs", "v1.34.4")
    assert not release_claim_holds("ipvs-deprecation", "nftables", "v1.37.2")
    assert not release_claim_holds("ipvs-deprecation", "iptables", "v1.37.2")


def test_deprecation_notices_are_read_only_once_every_kube_proxy_is_past_its_start(monkeypatch):
    """CI read a kube-proxy restarted by E17 a second after its start, before its notice."""
    from types import SimpleNamespace

    from harness import config, modes
    monkeypatch.setattr(config, "POLL_INTERVAL", 0)
    notice = 'E1203 server_linux.go:193] "The ipvs proxier has been deprecated and will be disabled ..."'
    started = 'I1203 server.go:530] "Version info" version="v1.37.2"'
    logs = iter([{"a": f"{notice}\n{started}", "b": "I1203 server_linux.go:191] \"Using ipvs Proxier\""},
                 {"a": f"{notice}\n{started}", "b": f"{notice}\n{started}"}])
    seen = {}

    class FakeKube:
        core = SimpleNamespace(list_event_for_all_namespaces=lambda **_: SimpleNamespace(items=[]))

        def pods(self, selector, namespace):
            seen.update(next(logs))
            return [SimpleNamespace(name=n) for n in sorted(seen)]

        def logs(self, name, namespace, tail):
            return seen[name]
    got = modes.deprecation_notices(FakeKube())
    assert all(got["logs"].values()), got  # b read after its start, not as silent
    assert got["events"] == []
