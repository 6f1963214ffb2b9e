"""The fault-injection bed's pure logic: the scenario table, the leftover diff and verdicts, results.md."""
import json
import signal

import pytest

from harness import cli, config
from harness.faults import inventory, results, scenarios
from harness.faults.bed import tool_problems
from harness.faults.inventory import Inventory
from harness.faults.scenarios import BY_NAME, SCENARIOS


# ---------------------------------------------------------------- the table
def test_scenarios_have_unique_names_tags_and_known_points_targets_and_expectations():
    assert len({s.name for s in SCENARIOS}) == len(SCENARIOS)
    assert len({s.tag for s in SCENARIOS}) == len(SCENARIOS)
    for s in SCENARIOS:
        assert s.point in scenarios.POINTS and s.target in scenarios.TARGETS, s.name
        assert s.expect in scenarios.EXPECTS, s.name
        assert isinstance(s.exit_code, int) and s.exit_within > 0 and s.point_timeout > 0, s.name
        assert set(s.tolerate) <= set(scenarios.KINDS), s.name
        assert s.note, s.name


def test_every_expected_exit_code_follows_from_the_fault():
    for s in SCENARIOS:
        if s.expect == scenarios.TOOLS_COPE:
            assert s.signum is None and s.exit_code == 0 and not s.needs_cluster, s.name
        elif s.fault == "SIGKILL":  # nothing can react: Popen reports the signal, and clean must recover
            assert s.exit_code == -signal.SIGKILL and s.expect == scenarios.CLEAN_RECOVERS, s.name
        elif s.fault == "SIGINT":   # pytest's own "interrupted"
            assert s.exit_code == 2 and s.expect == scenarios.NOTHING_LEFT, s.name
        elif s.target == "worker":  # the run goes on: the crashed worker's test fails
            assert s.exit_code == 1 and s.expect == scenarios.NOTHING_LEFT, s.name
        else:                        # the controller's handler: 128 + the signal
            assert s.fault in ("SIGTERM", "SIGHUP") and s.exit_code == 128 + s.signum, s.name
            assert s.expect == scenarios.NOTHING_LEFT, s.name
    assert BY_NAME["sigterm-during-create"].exit_code == 143 and BY_NAME["sighup-during-test"].exit_code == 129


def test_runs_are_the_smallest_one_and_their_prefixes_are_valid_cluster_prefixes():
    from harness.plugin import _cluster_prefix
    assert (config.REPO / "suites" / "test_cluster.py").read_text().count('experiment("E00"') == 1
    for s in SCENARIOS:
        prefix = scenarios.cluster_prefix(s, "ffffff")
        assert _cluster_prefix(prefix) == prefix and prefix.startswith(f"fault-{s.tag}-")
        if not s.needs_cluster:
            continue
        argv = scenarios.pytest_argv(s, prefix, config.REPO / "artifacts" / "x", ["--worker-nodes=1"])
        assert argv[1:3] == ["-m", "pytest"] and "suites/test_cluster.py" in argv
        assert {"--proxy-mode=iptables", "--experiments=E00", "--lb-provider=none",
                f"--cluster-prefix={prefix}"} <= set(argv)
        assert argv[argv.index("-p") + 1] == "no:cacheprovider" and argv[-1] == "--worker-nodes=1"
    assert BY_NAME["sigterm-worker-during-test"].pytest_args[-2:] == ("-n", "2")
    assert scenarios.cluster_prefix(SCENARIOS[0]) != scenarios.cluster_prefix(SCENARIOS[0])  # one per run


def test_the_ci_subset_exists_and_selection_keeps_table_order():
    assert scenarios.CI == ["sigterm-during-create", "sigkill-during-test", "corrupt-marker"]
    assert [s.name for s in scenarios.select(ci=True)] == scenarios.CI
    assert [s.name for s in scenarios.select("corrupt-marker,sigint-during-test")] == \
        ["sigint-during-test", "corrupt-marker"]
    assert [s.name for s in scenarios.select("sigint-during-test,corrupt-marker", ci=True)] == ["corrupt-marker"]
    assert scenarios.select() == SCENARIOS
    with pytest.raises(ValueError, match="unknown scenario.*nope.*sigterm-during-create"):
        scenarios.select("nope")


def test_the_command_lists_and_refuses_unknown_names(capsys, monkeypatch):
    from harness.faults import bed
    from harness.faults.__main__ import main

    def must_not_run(*a, **kw):  # a selection bug must fail here, not start real runs
        raise AssertionError(f"the bed would have run: {a}")
    monkeypatch.setattr(bed, "run_all", must_not_run)
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(s.name in out for s in SCENARIOS) and "exit 143" in out
    with pytest.raises(SystemExit) as e:
        main(["--only=nope"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["--only=sigint-during-test", "--ci"])
    assert e.value.code == 2 and "leaves no scenario" in capsys.readouterr().err
    assert cli.TOOLS["faults"] == "harness.faults.__main__"


# ---------------------------------------------------------------- leftovers
def _inv(**kw) -> Inventory:
    return Inventory(**kw)


def test_leftovers_are_what_the_run_added_and_guard_rules_nobody_else_keeps():
    before = _inv(containers=["old"], guard_rules=["-A DOCKER-USER ... svc-harness egress guard"])
    after = _inv(containers=["old", "p-iptables-control-plane"], markers=["p-iptables.json"],
                 kubeconfigs=[], run_dirs=["abc123"], guard_rules=["-A DOCKER-USER ... svc-harness egress guard"])
    assert inventory.leftovers(before, after) == {
        "containers": ["p-iptables-control-plane"], "markers": ["p-iptables.json"], "run_dirs": ["abc123"],
        "guard_rules": ["-A DOCKER-USER ... svc-harness egress guard"]}
    # Another run's node on the kind network keeps the rules there: not a leftover of this run.
    after.others_on_network = ["svc-harness-nftables-control-plane"]
    assert "guard_rules" not in inventory.leftovers(before, after)
    assert inventory.leftovers(after, after) == {}
    assert inventory.judged({"run_dirs": ["x"], "markers": ["m"]}, ("run_dirs",)) == {"markers": ["m"]}


def test_stat_fields_survive_a_command_with_spaces_and_parens():
    assert inventory.stat_fields("4242 (kind (create) x) S 17 4200 4200 0 -1") == ("S", 17, 4200)


def test_kind_create_is_recognised_only_for_its_cluster():
    argv = ["/root/go/bin/kind", "create", "cluster", "--name", "fault-a-1-iptables", "--config", "c.yaml"]
    assert inventory.is_kind_create(argv, "fault-a-1-iptables")
    assert not inventory.is_kind_create(argv, "fault-a-1")
    assert not inventory.is_kind_create(["kind", "delete", "cluster", "--name", "fault-a-1-iptables"],
                                        "fault-a-1-iptables")


def test_run_ids_are_the_run_directories_of_that_owner(tmp_path):
    from harness.owners import Owner
    me, other = Owner(1, "10", "b"), Owner(2, "20", "b")
    for rid, owner in (("r1", me), ("r2", other)):
        (tmp_path / rid).mkdir()
        (tmp_path / rid / "owner.json").write_text(json.dumps(owner.to_dict()))
    (tmp_path / "abort-r1.log").write_text("")
    assert inventory.run_ids_of(me, tmp_path) == {"r1"}


def test_the_plain_clusters_fingerprint_changes_are_named():
    fp = {"containers": [["faults-plain-control-plane", "abc", "running", "172.18.0.2"]],
          "network": {"id": "n1", "subnets": ["172.18.0.0/16"]}}
    assert inventory.fingerprint_changes(fp, json.loads(json.dumps(fp))) == []
    moved = {"containers": [["faults-plain-control-plane", "abc", "exited", "172.18.0.2"]],
             "network": {"id": "n2", "subnets": ["172.18.0.0/16"]}}
    changes = inventory.fingerprint_changes(fp, moved)
    assert any("faults-plain-control-plane" in c and "exited" in c for c in changes)
    assert any("kind network id: n1 -> n2" in c for c in changes)
    assert inventory.fingerprint_changes(fp, {"containers": [], "network": fp["network"]}) == \
        ["container faults-plain-control-plane gone"]


# ---------------------------------------------------------------- verdicts
def _result(name: str, **kw) -> dict:
    s = BY_NAME[name]
    r = {"name": s.name, "fault": s.fault, "target": s.target, "point": s.point, "expect": s.expect,
         "prefix": f"fault-{s.tag}-ffffff", "exit_expected": s.exit_code, "exit_within": s.exit_within,
         "exit_seen": s.exit_code, "fault_to_exit": 5.0, "point_reached": True, "point_seconds": 30.0,
         "point_seen": "", "left": {}, "tolerated": list(s.tolerate), "clean_ran": False, "clean_rc": None,
         "clean_seconds": None, "left_after_clean": {}, "swept": [], "plain_changes": [], "problems": [],
         "log": "artifacts/faults/x"}
    r.update(kw)
    return results.judge(s, r)


def test_a_graceful_signal_is_green_only_with_its_exit_in_time_and_nothing_left():
    assert _result("sigterm-during-create", left={"run_dirs": ["r1"]})["verdict"] == "green"  # tolerated
    r = _result("sigterm-during-create", left={"containers": ["fault-x-iptables-worker"], "run_dirs": ["r1"]})
    assert r["verdict"] == "red" and r["reasons"] == ["left after the run: containers 1"]
    assert _result("sigint-during-test", left={"run_dirs": ["r1"]})["verdict"] == "red"  # finish_run removes it
    r = _result("sighup-during-test", exit_seen=1)
    assert r["reasons"] == ["exit 1, expected 129"]
    r = _result("sighup-during-test", fault_to_exit=91.0)
    assert r["reasons"] == ["exit 91s after the fault, expected within 90s"]
    r = _result("sigterm-during-create", point_reached=False, point_seen="timed out after 300s waiting for x")
    assert r["verdict"] == "red" and "never reached: timed out after 300s waiting for x" in r["reasons"][0]
    r = _result("sigint-during-test", plain_changes=["container faults-plain-worker gone"])
    assert r["reasons"] == ["the plain kind cluster changed: container faults-plain-worker gone"]


def test_a_kill_is_green_only_when_it_left_things_and_clean_removed_them_all():
    left = {"containers": ["a", "b", "c"], "markers": ["m.json"], "guard_rules": ["r"]}
    ok = _result("sigkill-during-test", exit_seen=-9, left=left, clean_ran=True, clean_rc=0, clean_seconds=22.0)
    assert ok["verdict"] == "green", ok["reasons"]
    assert _result("sigkill-during-test", left={})["reasons"] == [
        "expected leftovers of a killed run and saw none: the fault hit nothing of the run"]
    r = _result("sigkill-during-create", left=left, clean_ran=True, clean_rc=0, clean_seconds=9.0,
                left_after_clean={"containers": ["c"]})
    assert r["reasons"] == ["left after `svc-harness clean`: containers 1"]
    r = _result("sigkill-during-create", left=left, clean_ran=True, clean_rc=1, clean_seconds=9.0)
    assert r["reasons"] == ["`svc-harness clean` exited 1"]
    assert _result("sigkill-during-test", exit_seen=143, left=left, clean_ran=True, clean_rc=0)["reasons"] == [
        "exit 143, expected -9 (SIGKILL)"]


def test_corrupt_markers_are_judged_by_what_status_clean_and_a_claim_said():
    assert _result("corrupt-marker", exit_seen=0, fault_to_exit=None, clean_ran=True, clean_rc=0,
                   clean_seconds=3.0, status_seconds=2.0)["verdict"] == "green"
    r = _result("corrupt-marker", exit_seen=1, fault_to_exit=None, clean_ran=True, clean_rc=1, clean_seconds=3.0,
                problems=["clean crashed: AttributeError: 'list' object has no attribute 'get'"])
    assert r["reasons"] == ["clean crashed: AttributeError: 'list' object has no attribute 'get'",
                            "exit 1, expected 0"]


def test_tool_problems_name_a_crash_a_silence_and_an_unexplained_name():
    names = {"truncated": "fault-marker-1-truncated", "json-list": "fault-marker-1-json-list"}
    crashed = ("clusters with a harness marker:\n  fault-marker-1-truncated\nTraceback (most recent call last):\n"
               "  File x\nAttributeError: 'list' object has no attribute 'get'\n")
    assert tool_problems("status", 1, crashed, names, say_unreadable=True) == [
        "status exited 1",
        "status crashed: AttributeError: 'list' object has no attribute 'get'",
        "status names fault-marker-1-truncated (its marker: truncated) but not that it cannot be read: "
        "'fault-marker-1-truncated'",
        "status does not name fault-marker-1-json-list (its marker: json-list)"]
    clear = "  fault-marker-1-truncated: marker unreadable\n  fault-marker-1-json-list: marker unreadable\n"
    assert tool_problems("status", 0, clear, names, say_unreadable=True) == []
    assert tool_problems("clean", 0, "deleted cluster fault-marker-1-truncated\n", names) == [
        "clean does not name fault-marker-1-json-list (its marker: json-list)"]


# ---------------------------------------------------------------- results.md
def _data() -> dict:
    green = _result("sigterm-during-create", left={"run_dirs": ["r1"]}, fault_to_exit=12.3, point_seconds=34.0)
    killed = _result("sigkill-during-test", exit_seen=-9, fault_to_exit=0.1, point_seconds=95.0,
                     left={"containers": ["a", "b", "c"], "guard_rules": ["r1", "r2", "r3"]},
                     clean_ran=True, clean_rc=0, clean_seconds=22.0, left_after_clean={"markers": ["m.json"]})
    data = {"started": "2026-12-04 10:00:00", "kubernetes": "v1.37.2", "node_image": "svc-harness/node:v1.37.2",
            "seconds": 300.0, "extra": [], "stopped": "", "scenarios": [green, killed],
            "plain_cluster": {"name": "faults-plain", "fingerprint": {
                "containers": [["faults-plain-control-plane", "abc", "running", "172.18.0.2"]],
                "network": {"id": "0123456789abcdef", "subnets": ["172.18.0.0/16"]}}}}
    data["verdict"] = results.overall(data)
    return data


def test_results_md_has_one_row_per_scenario_with_exit_times_leftovers_and_clean():
    md = results.render(_data())
    assert "Verdict: **RED** (1 of 2 green)" in md
    assert ("| sigterm-during-create | SIGTERM → controller | kind-create-running (34.0s) | 143 / 143 | 12.3s | "
            "run dirs 1 (allowed) | not needed | – | green |") in md
    assert ("| sigkill-during-test | SIGKILL → group | test-running (95.0s) | -9 (SIGKILL) / -9 (SIGKILL) | 0.1s | "
            "containers 3, guard rules 3 | exit 0 in 22.0s | markers 1 | red |") in md
    assert "- red because: left after `svc-harness clean`: markers 1" in md
    assert "- left after clean, markers: `m.json`" in md
    assert "`faults-plain` (plain `kind create cluster`, 1 containers; kind network 0123456789ab 172.18.0.0/16): " \
           "unchanged after every scenario." in md


def test_results_are_written_as_markdown_and_json(tmp_path):
    data = _data()
    md, js = results.write(data, tmp_path)
    assert json.loads(js.read_text())["scenarios"][1]["left_after_clean"] == {"markers": ["m.json"]}
    assert md.read_text().startswith("# Fault injection on harness runs")


def test_the_overall_verdict_is_green_only_for_a_complete_green_run():
    data = _data()
    data["scenarios"] = data["scenarios"][:1]
    assert results.overall(data) == "green"
    assert results.overall({**data, "stopped": "stopped by signal 15 after 1 scenario(s)"}) == "red"
    assert results.overall({**data, "scenarios": []}) == "red"
