"""Unit tests for harness.migration: the report's "Moving from ipvs to nftables" section."""
from harness import migration
from harness.report import Evidence, render_json, render_markdown


def ev(experiment, mode, observed=(), samples=(), verdict="pass", detail="", phase="call"):
    return Evidence(experiment=experiment, mode=mode, title=f"title of {experiment}", claim="c", action="",
                    observed=list(observed), verdict=verdict, detail=detail, phase=phase,
                    samples=[{"check": c, "vantage": "pod"} for c in samples])


def checked(summary, *judged):
    """Lines as Lab.check records them: the sample's summary, its judged outcomes, first answers."""
    return [summary, *judged, "  iKubernetes demoapp v1.0 !! ClientIP: 10.244.1.8"]


def e04(mode, judged):
    return ev("E04", mode, checked(f"pod -> http://10.96.0.{len(mode)}:80/: 300 requests; backends: ...",
                                   "ok   answers: 300 of 300 requests answered; outcomes: ok=300", judged),
              samples=["distribution"])


RR = "ok   round-robin: strict rotation over 3 backends for 300 answers; order: [a, b, c, ...]"
UNIFORM = "ok   uniform: consistent with uniform choice (chi-square=0.98, p=0.613); counts: a=92, b=105, c=103"


def test_a_difference_is_listed_with_the_evidence_of_both_sides():
    evs = [e04("ipvs", RR), e04("nftables", UNIFORM), e04("iptables", UNIFORM)]
    data = migration.compare(evs)
    assert [d["experiment"] for d in data["differ"]] == ["E04"] and data["same"] == []
    d = data["differ"][0]
    # Each side shows what it judged and the other did not; the shared "answers" is not a difference.
    assert d["ipvs"]["evidence"] == ["distribution: ok round-robin: strict rotation over 3 backends for 300 answers"]
    assert d["nftables"]["evidence"] == ["distribution: ok uniform: consistent with uniform choice (chi-square=0.98, p=0.613)"]
    assert d["ipvs"]["verdict"] == d["nftables"]["verdict"] == "pass"
    # Why, from expectations.py's data: E04's per-mode expectations differ.
    assert "rr scheduler" in d["why"]["distribution"]["ipvs"] and "numgen" in d["why"]["distribution"]["nftables"]
    md = render_markdown(evs)
    section = md[md.index("## Moving from ipvs to nftables"):md.index("## E04 -- ")]
    assert "1 differ, 0 the same, 0 not compared." in section
    assert "- **E04** -- title of E04" in section
    assert "  - ipvs: PASS; `distribution: ok round-robin: strict rotation over 3 backends for 300 answers`" in section
    assert "  - nftables: PASS; `distribution: ok uniform: consistent" in section
    assert render_json(evs)[migration.KEY] == data


def test_identical_outcomes_are_not_differences():
    # Same judged outcomes, but different pods, counts, clusters and per-mode expectation text.
    evs = [ev("E05", mode, checked(f"pod {mode} -> http://10.96.{n}.1:80/: 60 requests",
                                   f"ok   one-backend: 1 backend(s) answered; counts: demoapp-{mode}=60"),
              samples=["affinity-clientip"]) for n, mode in enumerate(("ipvs", "nftables"))]
    evs += [ev("E15", mode, [f"From 10.96.{n}.1 icmp_seq=1 Destination Port Unreachable",
                             f"outcome: port unreachable (expected in {mode} mode: {want})"])
            for n, (mode, want) in enumerate((("ipvs", "port unreachable"), ("nftables", "no answer or port unreachable")))]
    data = migration.compare(evs)
    assert data["differ"] == []
    assert [(s["experiment"], s["verdict"], s["outcomes"]) for s in data["same"]] == [
        ("E05", "pass", []), ("E15", "pass", ["outcome: port unreachable"])]
    assert "**Observed the same in both (2):** E05 (PASS), E15 (PASS; outcome: port unreachable)" in render_markdown(evs)


def test_a_different_judgment_under_the_same_verdict_or_a_different_verdict_is_a_difference():
    evs = [ev("E15", "ipvs", ["outcome: port unreachable (expected in ipvs mode: port unreachable)"]),
           ev("E15", "nftables", ["outcome: no answer (expected in nftables mode: no answer or port unreachable)"]),
           # The same outcome checked in a different sample: E05's affinity is not E05's spread.
           ev("E05", "ipvs", checked("s", "ok   one-backend: 1 backend(s) answered"), samples=["affinity-clientip"]),
           ev("E05", "nftables", checked("s", "ok   one-backend: 1 backend(s) answered"), samples=["affinity-none"]),
           ev("E19", "ipvs", verdict="fail", detail="kube-proxy [a] did not log\nmore"),
           ev("E19", "nftables")]
    data = migration.compare(evs)
    by = {d["experiment"]: d for d in data["differ"]}
    assert set(by) == {"E05", "E15", "E19"} and data["same"] == []
    assert by["E15"]["ipvs"]["evidence"] == ["outcome: port unreachable (expected in ipvs mode: port unreachable)"]
    assert by["E15"]["nftables"]["evidence"][0].startswith("outcome: no answer")
    assert by["E05"]["nftables"]["evidence"] == ["affinity-none: ok one-backend: 1 backend(s) answered"]
    assert by["E19"]["ipvs"] == {"verdict": "fail", "phase": "call", "evidence": ["kube-proxy [a] did not log"]}


def test_the_section_is_absent_without_both_modes():
    for modes in (("iptables", "ipvs"), ("iptables", "nftables"), ("ipvs",)):
        evs = [e04(m, RR if m == "ipvs" else UNIFORM) for m in modes]
        assert migration.compare(evs) is None
        assert "Moving from ipvs to nftables" not in render_markdown(evs)
        assert migration.KEY not in render_json(evs)
    both = [e04("ipvs", RR), e04("nftables", UNIFORM)]
    assert "## Moving from ipvs to nftables" in render_markdown(both) and migration.KEY in render_json(both)


def test_an_experiment_recorded_in_one_mode_only_is_not_compared():
    evs = [e04("ipvs", RR), e04("nftables", RR),
           ev("E13", "nftables", checked("s", "ok   answers: 20 of 20"), samples=["externalip-holder"]),
           ev("E13", "iptables", checked("s", "ok   answers: 20 of 20"), samples=["externalip-holder"]),
           ev("E14", "ipvs", ["mode: ipvs"]),
           ev("E12", "ipvs", verdict="skip", detail="no external vantage point", phase="setup"),
           ev("E12", "nftables", verdict="skip", detail="no external vantage point", phase="setup")]
    # A skip in one mode is what that column shows: compared, with the reason as its evidence.
    evs += [ev("E17", "ipvs", checked("s", "ok   round-robin: strict rotation"), samples=["ipvs-scheduler-rr"])]
    evs += [ev("E17", "nftables", verdict="skip", detail="Skipped: experiment applies to ipvs only", phase="setup")] * 6
    data = migration.compare(evs)
    assert [(n["experiment"], n["reason"]) for n in data["not_compared"]] == [
        ("E12", "skipped in both"), ("E13", "recorded in nftables only"), ("E14", "recorded in ipvs only")]
    assert [s["experiment"] for s in data["same"]] == ["E04"]
    assert [d["experiment"] for d in data["differ"]] == ["E17"]
    e17 = data["differ"][0]
    assert e17["nftables"] == {"verdict": "skip", "phase": "setup",
                               "evidence": ["Skipped: experiment applies to ipvs only"]}
    assert e17["why"] == {"ipvs-scheduler-rr": {"ipvs": "rr rotates over the real servers", "nftables": ""}}
    md = render_markdown(evs)
    assert "**Not compared, recorded in nftables only (1):** E13" in md
    assert "**Not compared, recorded in ipvs only (1):** E14" in md
    assert "**Not compared, skipped in both (1):** E12" in md
    assert "  - nftables: SKIP (setup); `Skipped: experiment applies to ipvs only`" in md
    assert "ipvs-scheduler-rr, harness/expectations.py): ipvs: rr rotates over the real servers; nftables: no entry" in md


def test_long_evidence_is_cut_short():
    judged = ["ok   one-backend: 1 backend(s) answered" for _ in range(6)]
    ipvs = ev("E17", "ipvs", [line for j in judged for line in checked("s", j)],
              samples=[f"ipvs-scheduler-{s}" for s in ("sh", "dh", "sed", "nq", "x", "y")])
    side = migration.compare([ipvs, ev("E17", "nftables", verdict="skip", detail="n/a")])["differ"][0]["ipvs"]
    assert len(side["evidence"]) == migration.SHOWN + 1 and side["evidence"][-1] == "... and 2 more judged outcomes"


def test_the_section_from_real_evidence_validates_against_the_schema(tmp_path):
    # Evidence a real CI run wrote (E00 and E04, ipvs in the UML guest and nftables on the host, 2026-12-03).
    import json
    import shutil
    from pathlib import Path

    import jsonschema
    from harness import config, report
    shutil.copy(Path(__file__).parent / "data" / "evidence-ipvs-nftables-E00-E04.jsonl", tmp_path / "evidence-x.jsonl")
    md, js = report.write_report(tmp_path)
    data = json.loads(js.read_text())
    jsonschema.validate(data, json.loads((config.REPO / "harness" / "report.schema.json").read_text()))
    moving = data["ipvs_to_nftables"]
    assert [e["experiment"] for e in moving["differ"]] == ["E04"]  # round-robin against random
    assert [e["experiment"] for e in moving["same"]] == ["E00"]
    assert "## Moving from ipvs to nftables" in md.read_text()
