"""Pure parts of harness.upstream: spec ids, focus regexps, ginkgo's report read back, verdicts, tables."""
import json
import re
from types import SimpleNamespace

import pytest

from harness import runstate
from harness.upstream import coverage, report, run, specs

NAMES = ["[sig-network] Services should serve a basic endpoint from pods  [Conformance]",
         "[sig-network] Services should be updated after adding or deleting ports ",
         "[sig-network] Services should have session affinity work for NodePort service [LinuxOnly] [Conformance]"]


def ginkgo_report(tmp_path, states):
    """A ginkgo --json-report with one It per (name, state), plus a suite node that must be ignored.
    State "filtered": how ginkgo lists a spec its --focus left out (skipped, no reason)."""
    reports = [{"LeafNodeType": "SynchronizedBeforeSuite", "State": "passed", "LeafNodeText": ""}]
    for name, state in states:
        leaf = name[len("[sig-network] Services "):]
        r = {"ContainerHierarchyTexts": ["[sig-network] Services"], "LeafNodeText": leaf, "LeafNodeType": "It",
             "State": "skipped" if state == "filtered" else state, "RunTime": 2_500_000_000,
             "CapturedGinkgoWriterOutput": "STEP: curl ...\n"}
        if state == "failed":
            r["Failure"] = {"Message": "service is not reachable within 2m0s timeout on endpoint 10.96.0.10:80",
                            "Location": {"FileName": "test/e2e/network/service.go", "LineNumber": 1310}}
        if state == "skipped":
            r["Failure"] = {"Message": "Only supported for providers [gce gke] (not skeleton)"}
        reports.append(r)
    path = tmp_path / "report.json"
    path.write_text(json.dumps([{"SuitePath": "/e2e", "SpecReports": reports}]))
    return path


def test_ids_drop_the_common_prefix_and_are_k_selectable_words():
    ids = [s.id for s in specs.to_specs(NAMES)]
    assert ids == ["should-serve-a-basic-endpoint-from-pods-Conformance",
                   "should-be-updated-after-adding-or-deleting-ports",
                   "should-have-session-affinity-work-for-NodePort-service-LinuxOnly-Conformance"]


def test_clashing_ids_get_a_number():
    ids = [s.id for s in specs.to_specs(["[sig-network] Services a b", "[sig-network] Services a  b"])]
    assert ids == ["a-b", "a-b-2"]


def test_focus_matches_each_name_literally_and_nothing_else():
    focus = specs.focus_on(NAMES[:2])
    rx = re.compile(focus)  # RE2's syntax for these escapes is Python's
    assert rx.search(NAMES[0]) and rx.search(NAMES[1])
    assert not rx.search(NAMES[2])
    assert "\\[Conformance\\]" in focus and "\\ " not in focus  # RE2 refuses an escaped space


def test_report_maps_ginkgo_states_to_verdicts(tmp_path):
    path = ginkgo_report(tmp_path, [(NAMES[0], "passed"), (NAMES[1], "failed"), (NAMES[2], "skipped")])
    got = specs.read_report(path)
    assert set(got) == set(NAMES)  # the suite node is not a spec
    assert [got[n].verdict for n in NAMES] == ["pass", "fail", "skip"]
    assert got[NAMES[1]].seconds == 2.5 and got[NAMES[1]].location.endswith("service.go:1310")
    assert specs.SpecResult("x", "timedout", 1).verdict == "fail"
    assert specs.SpecResult("x", "panicked", 1).verdict == "fail"


def mode_run(tmp_path, states, **kw):
    out = tmp_path / "iptables"
    out.mkdir()
    (out / "report.json").write_text(ginkgo_report(tmp_path, states).read_text())
    return run.ModeRun("iptables", str(out), kw.get("returncode", 1), 60.0, len(states), **kw.get("extra", {}))


def test_a_failed_upstream_spec_fails_its_item_with_message_and_log(tmp_path):
    mr = mode_run(tmp_path, [(NAMES[1], "failed")])
    rec = report.Recorder(tmp_path, "gw0")
    with pytest.raises(pytest.fail.Exception) as e:
        mr.check(specs.to_specs([NAMES[1]])[0], rec)
    assert "not reachable within 2m0s" in str(e.value) and "spec log:" in str(e.value)
    assert (tmp_path / "iptables" / "specs" / "should-be-updated-after-adding-or-deleting-ports.log").exists()
    assert [r.verdict for r in report.load(tmp_path)] == ["fail"]


def test_a_spec_missing_from_the_report_fails_never_passes(tmp_path):
    mr = mode_run(tmp_path, [(NAMES[0], "passed")])
    with pytest.raises(pytest.fail.Exception, match="has no result"):
        mr.check(specs.to_specs([NAMES[1]])[0], report.Recorder(tmp_path, "gw0"))


def test_a_spec_the_focus_left_out_fails_never_skips(tmp_path):
    mr = mode_run(tmp_path, [(NAMES[0], "filtered")])
    with pytest.raises(pytest.fail.Exception, match="did not run this spec"):
        try:
            mr.check(specs.to_specs([NAMES[0]])[0], report.Recorder(tmp_path, "gw0"))
        except pytest.skip.Exception as e:
            pytest.fail(f"skipped: {e}")


def test_passed_passes_and_skipped_skips_with_upstreams_reason(tmp_path):
    mr = mode_run(tmp_path, [(NAMES[0], "passed"), (NAMES[2], "skipped")])
    s = specs.to_specs(NAMES)
    mr.check(s[0], report.Recorder(tmp_path, "gw0"))
    with pytest.raises(pytest.skip.Exception, match="Only supported for providers"):
        mr.check(s[2], report.Recorder(tmp_path, "gw0"))


def test_ginkgo_runs_exactly_the_selected_specs_in_parallel(tmp_path):
    opts = SimpleNamespace(upstream_procs=2, upstream_skip=specs.DEFAULT_SKIP)
    argv = run.ginkgo_argv({"ginkgo": "/b/ginkgo", "e2e.test": "/b/e2e.test"}, opts, tmp_path, "/kc", NAMES[:1], 2)
    assert argv[0] == "/b/ginkgo" and "--procs=1" in argv  # never more processes than specs
    assert argv.index("/b/e2e.test") < argv.index("--") < argv.index("--kubeconfig=/kc")
    assert f"--focus={specs.focus_on(NAMES[:1])}" in argv and "--json-report=report.json" in argv
    assert "--num-nodes=2" in argv  # else upstream's node-count guards skip specs


def test_report_has_a_table_per_mode_and_the_coverage_table():
    rows = [report.Row("iptables", NAMES[0], "pass", 3.0),
            report.Row("nftables", NAMES[0], "fail", 9.0, "boom\nmore", "/a/b.log")]
    md = report.render_markdown(rows)
    assert "## iptables: 1 passed, 0 failed, 0 skipped" in md and "## nftables: 0 passed, 1 failed" in md
    assert "| should serve a basic endpoint from pods  [Conformance] | FAIL | 9.0s | boom (log: `/a/b.log`) |" in md
    assert "should serve a basic endpoint from pods (iptables PASS, nftables FAIL)" in md
    assert report.render_markdown([]) == ""


def test_coverage_names_every_experiment_once_and_real_service_specs():
    import re
    from harness import config
    in_suites = sorted({m for f in (config.REPO / "suites").glob("test_*.py")
                        for m in re.findall(r'mark\.experiment\("(E\d\d)"', f.read_text())})
    assert [c.experiment for c in coverage.COVERAGE] == in_suites
    for c in coverage.COVERAGE:
        assert c.specs or c.only_here, f"{c.experiment}: say what only this harness checks"
        for s in c.specs:
            assert s == s.strip() and s.startswith("should "), s


def test_a_run_that_cannot_start_fails_every_item_of_the_mode_once(tmp_path, monkeypatch):
    calls = []

    def boom(*a, **k):
        calls.append(1)
        raise RuntimeError("kind load failed")
    monkeypatch.setattr(run, "execute", boom)
    pyconfig = SimpleNamespace(stash=pytest.Stash(), option=SimpleNamespace(artifacts_dir=str(tmp_path)))
    runstate.of(pyconfig).run_dir = tmp_path
    # Two workers on one cluster of the mode: still one run for the mode.
    for worker in ("gw0", "gw1"):
        mr = run.for_mode(pyconfig, SimpleNamespace(name="upstream-iptables", mode="iptables"), NAMES[:1])
        with pytest.raises(pytest.fail.Exception, match="could not start: kind load failed"):
            mr.check(specs.to_specs(NAMES[:1])[0], report.Recorder(tmp_path, worker))
    assert calls == [1]


def test_a_mode_with_a_cluster_per_worker_splits_its_specs_and_each_part_runs_once(tmp_path, monkeypatch):
    ran = []

    def fake(opts, cluster, wanted, out_dir, runner=None):
        ran.append((cluster.name, tuple(wanted)))
        out_dir.mkdir(parents=True, exist_ok=True)
        # ginkgo's report lists the specs its focus left out too, as skipped
        states = [(n, "passed" if n in wanted else "filtered") for n in NAMES]
        (out_dir / "report.json").write_text(ginkgo_report(tmp_path, states).read_text())
        return run.ModeRun(cluster.mode, str(out_dir), 0, 1.0, len(wanted))
    monkeypatch.setattr(run, "execute", fake)
    pyconfig = SimpleNamespace(stash=pytest.Stash(), option=SimpleNamespace(artifacts_dir=str(tmp_path)))
    runstate.of(pyconfig).run_dir = tmp_path
    second = SimpleNamespace(name="u-ipvs-g2", mode="ipvs", part=(1, 2))
    first = SimpleNamespace(name="u-ipvs", mode="ipvs", part=(0, 2))
    for cluster in (second, first):  # the second worker asks first: it starts with its own part
        parts = run.for_mode(pyconfig, cluster, NAMES)
        for s in specs.to_specs(NAMES):
            try:
                parts.check(s, report.Recorder(tmp_path, "gw0"))
            except pytest.skip.Exception as e:  # read from the part that filtered it out
                pytest.fail(f"{s.name} passed in its part but was skipped: {e}")
    assert ran == [("u-ipvs-g2", tuple(NAMES[1::2])), ("u-ipvs-g2", tuple(NAMES[0::2]))]
    assert [r.part for r in parts.runs] == ["1/2", "2/2"] and parts.runs[0].cluster == "u-ipvs-g2"
    lines = report.render_markdown(report.load(tmp_path), tmp_path)
    assert "- e2e.test run (part 1/2): 2 specs in 1s on u-ipvs-g2" in lines
    assert sorted(report.runs(tmp_path)) == ["ipvs"] and len(report.runs(tmp_path)["ipvs"]) == 2


def test_a_spec_a_mode_cannot_pass_is_skipped_in_that_mode_only():
    from harness.upstream.specs import mode_skip
    name = "[sig-network] Services should have session affinity timeout work for service with type clusterIP [LinuxOnly]"
    assert "120 s" in mode_skip("ipvs", name)
    assert mode_skip("iptables", name) is None and mode_skip("nftables", name) is None
    assert mode_skip("ipvs", "[sig-network] Services should have session affinity work for service with type clusterIP") is None
