"""Unit tests for harness.report: recorder round trip and rendering."""
import json

import pytest

from harness.report import Evidence, Recorder, load, render_json, render_markdown, write_report


def ev(experiment, mode, verdict, detail="", title="T"):
    return Evidence(experiment=experiment, mode=mode, title=title,
                    claim=f"claim of {experiment}", action=f"curl {experiment}",
                    observed=[f"{experiment} {mode} line"], verdict=verdict, detail=detail)


def test_round_trip_across_workers(tmp_path):
    Recorder(tmp_path, "gw0").record(ev("a", "iptables", "pass"))
    Recorder(tmp_path, "gw1").record(ev("a", "ipvs", "fail", "boom\nmore"))
    Recorder(tmp_path, "gw0").record(ev("b", "nftables", "skip", "no ipvs modules"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evidence-gw0.jsonl", "evidence-gw1.jsonl"]
    evs = load(tmp_path)
    assert evs == [ev("a", "iptables", "pass"), ev("b", "nftables", "skip", "no ipvs modules"),
                   ev("a", "ipvs", "fail", "boom\nmore")]


def test_unreadable_line_is_skipped(tmp_path):
    Recorder(tmp_path, "gw0").record(ev("a", "iptables", "pass"))
    with (tmp_path / "evidence-gw0.jsonl").open("a") as f:
        f.write('{"experiment": "trunc')
    assert len(load(tmp_path)) == 1


def test_bad_verdict_rejected():
    with pytest.raises(ValueError):
        ev("a", "ipvs", "maybe")


def test_markdown_has_matrix_and_sections(tmp_path):
    rec = Recorder(tmp_path, "master")
    rec.record(ev("b", "nftables", "pass", title="second"))
    rec.record(ev("a", "iptables", "pass", title="first"))
    rec.record(ev("a", "ipvs", "fail", "expected refused\nobserved answers", title="first"))
    rec.record(ev("a", "nftables", "skip", "not supported", title="first"))
    md_path, json_path = write_report(tmp_path)
    md = md_path.read_text()
    lines = md.splitlines()
    assert lines[0].startswith("# ")
    assert "4 checks: 2 passed, 1 failed, 1 skipped." in md
    assert "| Experiment | iptables | ipvs | nftables |" in lines
    # Rows and sections in experiment order, not the order the tests ran in; empty cells show "-".
    assert lines.index("| a: first | PASS | FAIL | SKIP |") < lines.index("| b: second | - | - | PASS |")
    assert md.index("| Experiment") < md.index("## a -- first") < md.index("## b -- second")
    assert "**Claim:** claim of a" in md
    assert "- `curl a`" in md
    assert "```text\na ipvs line\n```" in md
    assert "```text\nexpected refused\nobserved answers\n```" in md
    assert "**Detail:** not supported" in md

    data = json.loads(json_path.read_text())
    again = render_json(load(tmp_path))
    assert {**data, "run": {}} == {**again, "run": {}}  # the same but for the time it was made
    assert data["modes"] == ["iptables", "ipvs", "nftables"]
    assert data["experiments"][0]["verdicts"] == {"iptables": "pass", "ipvs": "fail", "nftables": "skip"}


def test_fence_survives_backticks():
    e = ev("a", "ipvs", "pass")
    e.observed = ["```", "x"]
    assert "````text\n```\nx\n````" in render_markdown([e])


def test_empty_report(tmp_path):
    md, _ = write_report(tmp_path)
    assert "No evidence was recorded." in md.read_text()


def test_a_deliberately_broken_run_says_so_at_the_top():
    healthy = render_markdown([ev("E12", "iptables", "pass")])
    assert "broken on purpose" not in healthy
    broken = Evidence(experiment="E12", mode="iptables", title="T", claim="c", action="", observed=[],
                      verdict="fail", detail="x", broken="dns-down: cluster DNS is down")
    md = render_markdown([broken])
    assert md.index("broken on purpose") < md.index("| Experiment |") and "dns-down" in md


def test_e04_distribution_chart_per_mode(tmp_path):
    rec = Recorder(tmp_path, "gw0")
    for mode, counts in (("iptables", {"demoapp-x-a": 90, "demoapp-x-b": 110}), ("nftables", {"demoapp-y-a": 200})):
        e = ev("E04", mode, "pass")
        e.samples = [{"check": "distribution", "vantage": "pod", "target": "10.96.0.5:80", "backends": counts,
                      "outcomes": {"ok": 200}, "expected_backends": sorted(counts) + ["demoapp-y-z"] * (mode == "nftables")}]
        rec.record(e)
    rec.record(ev("E05", "iptables", "pass"))
    md, js = write_report(tmp_path)
    assert (tmp_path / "report-E04.png").read_bytes()[:4] == b"\x89PNG"
    text = md.read_text()
    assert text.count("](report-E04.png)") == 1 and "report-E05.png" not in text
    assert json.loads(js.read_text())["experiments"][0]["evidence"][0]["samples"][0]["backends"]["demoapp-x-a"] == 90


def test_no_chart_without_samples(tmp_path):
    (tmp_path / "report-E04.png").write_bytes(b"stale")
    Recorder(tmp_path, "gw0").record(ev("E04", "iptables", "pass"))
    md, _ = write_report(tmp_path)
    assert not (tmp_path / "report-E04.png").exists() and "report-E04.png" not in md.read_text()


def _run(directory, mode, verdict, worker="gw0"):
    """A finished run's artifacts: its evidence and the report (with gate) it wrote."""
    from harness.gate import Gate
    Recorder(directory, worker).record(ev("a", mode, verdict, title="first"))
    gate = Gate(requested=[mode])
    gate.record(mode, "call", "passed" if verdict == "pass" else "failed")
    write_report(directory, gate)


def test_merge_puts_separate_runs_in_one_matrix(tmp_path):
    from harness.report import merge
    main, ipvs = tmp_path / "artifacts", tmp_path / "artifacts" / "ipvs"
    _run(main, "iptables", "pass")
    _run(ipvs, "ipvs", "fail")
    md_path, json_path = merge(main, [ipvs])
    md = md_path.read_text()
    assert "| a: first | PASS | FAIL |" in md
    assert "- iptables: PASS (1 passed, 0 failed, 0 skipped)" in md
    assert "- ipvs: FAIL (0 passed, 1 failed, 0 skipped)" in md
    data = json.loads(json_path.read_text())
    assert data["modes"] == ["iptables", "ipvs"]
    assert set(data["gate"]) == {"iptables", "ipvs"}
    merge(main, [ipvs])  # again: the copied evidence is replaced, not doubled
    assert len(load(main)) == 2


def test_merge_brings_the_other_runs_upstream_specs(tmp_path):
    from harness.report import merge
    from harness.upstream import report as upstream
    main, ipvs = tmp_path / "artifacts", tmp_path / "artifacts" / "ipvs"
    _run(main, "iptables", "pass")
    upstream.Recorder(main, "gw0").record(upstream.Row("iptables", "[sig-network] Services spec a", "pass", 3.0))
    _run(ipvs, "ipvs", "pass")
    upstream.Recorder(ipvs, "main").record(upstream.Row("ipvs", "[sig-network] Services spec a", "fail", 9.0, "boom"))
    (ipvs / "upstream" / "ipvs").mkdir(parents=True)
    (ipvs / "upstream" / "ipvs" / "run.json").write_text(json.dumps(
        {"mode": "ipvs", "out_dir": "x", "returncode": 1, "seconds": 513.0, "specs": 1, "pulled": [], "error": ""}))
    md_path, json_path = merge(main, [ipvs])
    md = md_path.read_text()
    assert "## iptables: 1 passed, 0 failed, 0 skipped" in md
    assert "## ipvs: 0 passed, 1 failed, 0 skipped" in md and "1 specs in 513s" in md
    assert json.loads(json_path.read_text())["upstream"]["counts"]["ipvs"]["fail"] == 1
    merge(main, [ipvs])  # again: replaced, not doubled
    assert len(upstream.load(main)) == 2


def test_merge_refuses_a_mode_twice_and_unfinished_runs(tmp_path):
    from harness.report import merge
    _run(tmp_path / "a", "iptables", "pass")
    _run(tmp_path / "b", "iptables", "pass")
    with pytest.raises(SystemExit, match="more than one"):
        merge(tmp_path / "a", [tmp_path / "b"])
    with pytest.raises(SystemExit, match="no report.json"):
        merge(tmp_path / "a", [tmp_path / "missing"])


def test_a_report_from_real_evidence_validates_against_the_schema(tmp_path):
    # Evidence a real run wrote (ipvs in the UML guest, E00 and E18, 2026-12-02).
    import shutil
    from pathlib import Path

    import jsonschema
    from harness import config
    from harness import report
    shutil.copy(Path(__file__).parent / "data" / "evidence-ipvs-guest-E00-E18.jsonl", tmp_path / "evidence-x.jsonl")
    _, js = report.write_report(tmp_path)
    data = json.loads(js.read_text())
    schema = json.loads((config.REPO / "harness" / "report.schema.json").read_text())
    jsonschema.validate(data, schema)
    assert data["schema"] == report.SCHEMA_VERSION and data["run"]["kubernetes"].startswith("v1.")
    assert [e["experiment"] for e in data["experiments"]] == ["E00", "E18"]
    bad = {**data, "modes": ["userspace"]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
