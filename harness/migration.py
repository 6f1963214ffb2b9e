"""The report's "Moving from ipvs to nftables" section: what one run observed differently in the two modes.

ipvs is deprecated upstream in favour of nftables (E19), so a reader moving over wants to know
which observed outcomes change. Only the recorded evidence is compared, never the expectations:
per experiment and mode, the verdict and the outcomes the harness judged (see `judgments`).
Free text (pod names, IPs, counts, data-plane dumps) is shown but not compared, since it differs
between any two clusters.
"""
from __future__ import annotations

import re

from .report import Evidence, _by_experiment, _cell, _first

FROM, TO = "ipvs", "nftables"
KEY = "ipvs_to_nftables"       # report.json's key for the section
TITLE = "Moving from ipvs to nftables"
SHOWN = 4                      # judged lines shown per side of a difference

# The lines the harness writes when it judges something: expectations.check's "ok   <outcome>: ..."
# / "FAIL <outcome>: ...", E15's "outcome: <what ping got> (expected ...)" and E19's
# "the notice is expected: yes|no". What follows the judged word is run-specific detail.
_CHECKED = re.compile(r"^(ok|FAIL)\s+([a-z][\w-]*): ")
_OUTCOME = re.compile(r"^outcome: (.+?)(?: \(expected .*)?$")
_EXPECTED = re.compile(r"(\w+ is expected: (?:yes|no))\b")


def judgments(evs: list[Evidence]) -> dict[str, str]:
    """Judgment -> the first evidence line that shows it, over one experiment's evidence in one mode.
    A checked outcome is named after its sample's check (Lab.check records both in the same order),
    so E05's "affinity-clientip: one-backend ok" and "affinity-none: spread ok" stay apart."""
    found: dict[str, str] = {}
    for ev in evs:
        checks = [s.get("check", "") for s in ev.samples]
        blocks = sum(1 for i, line in enumerate(ev.observed)
                     if _CHECKED.match(line) and not (i and _CHECKED.match(ev.observed[i - 1])))
        if blocks != len(checks):
            checks = []  # not recorded by Lab.check alone: unnamed rather than misnamed
        block, in_block = -1, False
        for line in ev.observed:
            m = _CHECKED.match(line)
            if m:
                block += not in_block  # consecutive ok/FAIL lines belong to one checked sample
                in_block = True
                label = f"{checks[block]}: " if block < len(checks) else ""
                key = f"{label}{m[2]} {m[1]}"
                # The judged phrase is what counts; after "; " come counts and orders.
                line = label + " ".join(line.split(";", 1)[0].split())
            else:
                in_block = False
                m = _OUTCOME.match(line) or _EXPECTED.search(line)
                key = f"outcome: {m[1]}" if m and m.re is _OUTCOME else (m[1] if m else "")
            if key:
                found.setdefault(key, line.strip())
    return found


def _side(evs: list[Evidence], shown: list[str], lines: dict[str, str]) -> dict:
    """One mode's evidence, briefly: its verdict, why it was not a pass, and the judged lines."""
    verdict = _cell(evs)
    # phase "setup": the bench decided (skipped the mode, or failed to build), not the claim itself.
    phase = _first([ev for ev in evs if ev.verdict == verdict], "phase")
    detail = _first([ev for ev in evs if ev.verdict == verdict], "detail").splitlines()
    brief = [_short(lines[k]) for k in shown[:SHOWN]]
    if len(shown) > SHOWN:  # E17's six schedulers would fill a screen; the experiment's section has all
        brief.append(f"... and {len(shown) - SHOWN} more judged outcomes")
    if verdict != "pass" and detail:
        brief.insert(0, _short(detail[0]))
    return {"verdict": verdict, "phase": phase, "evidence": brief}


def _short(line: str, width: int = 150) -> str:
    return line if len(line) <= width else line[:width - 3].rstrip() + "..."


def _why(a: list[Evidence], b: list[Evidence], keys: set[str]) -> dict[str, dict[str, str]]:
    """Per differing check, each mode's reason from expectations.EXPECTATIONS where they differ
    (data already there; a mode without an entry gets "")."""
    from . import expectations
    out: dict[str, dict[str, str]] = {}
    for s in (s for ev in a + b for s in ev.samples):
        check, vantage = s.get("check", ""), s.get("vantage", "")
        if check in out or not any(k.startswith(f"{check}: ") for k in keys):
            continue
        why = {}
        for mode in (FROM, TO):
            try:
                why[mode] = expectations.expect_for(check, vantage, mode)
            except (KeyError, ValueError):
                why[mode] = None
        if why[FROM] != why[TO]:
            out[check] = {m: e.why if e else "" for m, e in why.items()}
    return out


def compare(evs: list[Evidence]) -> dict | None:
    """The section as data (report.json's KEY), or None unless the run has both modes."""
    modes = {ev.mode for ev in evs}
    if FROM not in modes or TO not in modes:
        return None
    differ, same, not_compared = [], [], []
    for exp, group in _by_experiment(evs).items():
        a = [ev for ev in group if ev.mode == FROM]
        b = [ev for ev in group if ev.mode == TO]
        head = {"experiment": exp, "title": _first(group, "title")}
        if not a or not b:
            not_compared.append({**head, "reason": f"recorded in {FROM if a else TO} only"})
            continue
        va, vb = _cell(a), _cell(b)
        if va == vb == "skip":
            not_compared.append({**head, "reason": "skipped in both"})
            continue
        ja, jb = judgments(a), judgments(b)
        if va == vb and ja.keys() == jb.keys():
            same.append({**head, "verdict": va, "outcomes": sorted(k for k in ja if not k.endswith((" ok", " FAIL")))})
            continue
        only_a, only_b = [k for k in ja if k not in jb], [k for k in jb if k not in ja]
        differ.append({**head, FROM: _side(a, only_a, ja), TO: _side(b, only_b, jb),
                       "why": _why(a, b, set(only_a + only_b))})
    return {"from": FROM, "to": TO, "differ": differ, "same": same, "not_compared": not_compared}


def _code(s: str) -> str:
    # Inline code whose fence is longer than any backtick run inside, so it cannot end early.
    ticks = "`"
    while ticks in s:
        ticks += "`"
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{ticks}{pad}{s}{pad}{ticks}"


def render_markdown(data: dict | None) -> list[str]:
    """Markdown lines of the section; none when compare() found the run lacks a mode."""
    if not data:
        return []
    d, s, n = data["differ"], data["same"], data["not_compared"]
    out = ["", f"## {TITLE}", "",
           f"From this run's evidence, {FROM} against {TO}: the verdict and each outcome the harness judged "
           f"(free text such as pod names, IPs and counts is shown, not compared). "
           f"{len(d)} differ, {len(s)} the same, {len(n)} not compared.", ""]
    if d:
        out += ["**Observed differently:**", ""]
    for e in d:
        out.append(f"- **{e['experiment']}**" + (f" -- {e['title']}" if e["title"] else ""))
        for mode in (FROM, TO):
            side = e[mode]
            tag = side["verdict"].upper() + (f" ({side['phase']})" if side["phase"] not in ("", "call") else "")
            out.append(f"  - {mode}: {tag}" + "".join(f"; {_code(x)}" for x in side["evidence"]))
        for check, why in e["why"].items():
            out.append(f"  - expected ({check}, harness/expectations.py): "
                       + "; ".join(f"{m}: {w or 'no entry'}" for m, w in why.items()))
    if s:
        out += ["", f"**Observed the same in both ({len(s)}):** " + ", ".join(
            f"{e['experiment']} ({'; '.join([e['verdict'].upper(), *e['outcomes']])})" for e in s)]
    for reason in dict.fromkeys(e["reason"] for e in n):
        ids = [e["experiment"] for e in n if e["reason"] == reason]
        out += ["", f"**Not compared, {reason} ({len(ids)}):** " + ", ".join(ids)]
    return out
