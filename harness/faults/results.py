"""Judging a scenario's result against its expectation, and results.md / results.json.

A result is a plain dict (harness.faults.bed.Trial.result): what the bed saw. `verdict` compares it
with the Scenario and returns the reasons it is red (none: green).
"""
from __future__ import annotations

import json
import signal
from pathlib import Path

from .inventory import judged
from .scenarios import BY_NAME, CLEAN_RECOVERS, EXPECTS, NOTHING_LEFT, TOOLS_COPE, Scenario


def summary(left: dict[str, list[str]]) -> str:
    """{"containers": [a, b], "guard_rules": [r]} -> "containers 2, guard rules 1"."""
    return ", ".join(f"{kind.replace('_', ' ')} {len(items)}" for kind, items in left.items() if items) or "nothing"


def verdict(s: Scenario, r: dict) -> list[str]:
    """Why the result `r` of scenario `s` is red; an empty list when it is green."""
    reasons = list(r.get("problems") or [])
    if not r.get("point_reached"):
        return reasons + [f"the point was never reached: {r.get('point_seen') or '(nothing seen)'}"]
    if r.get("exit_seen") != s.exit_code:
        reasons.append(f"exit {exit_text(r.get('exit_seen'))}, expected {exit_text(s.exit_code)}")
    took = r.get("fault_to_exit")
    if took is not None and took > s.exit_within:
        reasons.append(f"exit {took:.0f}s after the fault, expected within {s.exit_within:.0f}s")
    left = r.get("left") or {}
    if s.expect == NOTHING_LEFT and judged(left, s.tolerate):
        reasons.append(f"left after the run: {summary(judged(left, s.tolerate))}")
    if s.expect == CLEAN_RECOVERS and not left:
        reasons.append("expected leftovers of a killed run and saw none: the fault hit nothing of the run")
    if s.expect in (NOTHING_LEFT, CLEAN_RECOVERS) and r.get("clean_ran"):
        if r.get("clean_rc") != 0:
            reasons.append(f"`svc-harness clean` exited {exit_text(r.get('clean_rc'))}")
        if r.get("left_after_clean"):
            reasons.append(f"left after `svc-harness clean`: {summary(r['left_after_clean'])}")
    if s.expect == TOOLS_COPE and r.get("clean_seconds") is not None \
            and r["clean_seconds"] + (r.get("status_seconds") or 0) > s.exit_within:
        reasons.append(f"status and clean took {r['clean_seconds'] + (r.get('status_seconds') or 0):.0f}s, "
                       f"expected within {s.exit_within:.0f}s")
    if r.get("plain_changes"):
        reasons.append(f"the plain kind cluster changed: {'; '.join(r['plain_changes'])}")
    return reasons


def judge(s: Scenario, r: dict) -> dict:
    """Put the verdict (green/red) and its reasons into `r`."""
    r["reasons"] = verdict(s, r)
    r["verdict"] = "red" if r["reasons"] else "green"
    return r


def overall(data: dict) -> str:
    """green only if scenarios ran, all are green, and the bed was not stopped."""
    scenarios = data.get("scenarios") or []
    ok = scenarios and not data.get("stopped") and all(r.get("verdict") == "green" for r in scenarios)
    return "green" if ok else "red"


def exit_text(rc) -> str:
    if rc is None:
        return "none"
    if rc < 0:
        try:
            return f"{rc} ({signal.Signals(-rc).name})"
        except ValueError:
            return str(rc)
    return str(rc)


def _seconds(value) -> str:
    return "–" if value is None else f"{value:.1f}s"


def _left_cell(left: dict, tolerated: list[str]) -> str:
    if not left:
        return "nothing"
    return ", ".join(f"{kind.replace('_', ' ')} {len(items)}" + (" (allowed)" if kind in tolerated else "")
                     for kind, items in left.items() if items)


def _clean_cell(r: dict) -> str:
    if not r.get("clean_ran"):
        return "not needed"
    return f"exit {exit_text(r.get('clean_rc'))} in {_seconds(r.get('clean_seconds'))}"


def render(data: dict) -> str:
    """results.md from a results dict (results.json)."""
    scenarios = data.get("scenarios") or []
    green = sum(r.get("verdict") == "green" for r in scenarios)
    lines = ["# Fault injection on harness runs", "",
             f"Kubernetes {data.get('kubernetes', '?')}, node image {data.get('node_image', '?')}; started "
             f"{data.get('started', '?')}, {_seconds(data.get('seconds'))} in all. "
             f"Verdict: **{data.get('verdict', overall(data)).upper()}** ({green} of {len(scenarios)} green).", ""]
    if data.get("stopped"):
        lines += [f"The bed was {data['stopped']}.", ""]
    if data.get("extra"):
        lines += [f"pytest options added to every run: `{' '.join(data['extra'])}`", ""]
    lines += ["| scenario | fault → target | point (reached after) | exit expected / seen | fault → exit | "
              "left after the run | clean | left after clean | verdict |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in scenarios:
        reached = f"{r['point']} ({_seconds(r.get('point_seconds'))})" if r.get("point_reached") \
            else f"{r['point']} (never)"
        after_clean = summary(r.get("left_after_clean") or {}) if r.get("clean_ran") else "–"
        lines.append(f"| {r['name']} | {r['fault']} → {r['target']} | {reached} | {exit_text(r.get('exit_expected'))}"
                     f" / {exit_text(r.get('exit_seen'))} | {_seconds(r.get('fault_to_exit'))} | "
                     f"{_left_cell(r.get('left') or {}, r.get('tolerated') or [])} | {_clean_cell(r)} | "
                     f"{after_clean} | {r.get('verdict', '?')} |")
    lines += ["", "## Each scenario", ""]
    for r in scenarios:
        s = BY_NAME.get(r["name"])
        lines += [f"### {r['name']}: {r.get('verdict', '?')}", "",
                  f"- expected: exit {exit_text(r.get('exit_expected'))} within {r.get('exit_within', 0):.0f}s; "
                  f"{EXPECTS.get(r.get('expect'), r.get('expect'))}"]
        if s and s.note:
            lines.append(f"- what happens: {s.note}")
        lines.append(f"- cluster prefix `{r.get('prefix')}`; logs under `{r.get('log')}`")
        for key, title in (("left", "left after the run"), ("left_after_clean", "left after clean")):
            for kind, items in (r.get(key) or {}).items():
                lines.append(f"- {title}, {kind.replace('_', ' ')}: " + ", ".join(f"`{i}`" for i in items))
        if r.get("swept"):
            lines.append("- removed by the bed's sweep of its prefix: " + ", ".join(r["swept"]))
        lines += [f"- red because: {reason}" for reason in r.get("reasons") or []]
        lines.append("")
    plain = data.get("plain_cluster")
    if plain:
        changed = [f"{r['name']}: {'; '.join(r['plain_changes'])}" for r in scenarios if r.get("plain_changes")]
        fp = plain.get("fingerprint") or {}
        net = fp.get("network") or {}
        lines += ["## The plain kind cluster", "",
                  f"`{plain['name']}` (plain `kind create cluster`, {len(fp.get('containers') or [])} containers; "
                  f"kind network {net.get('id', '')[:12]} {', '.join(net.get('subnets') or [])}): "
                  + ("unchanged after every scenario." if not changed else "CHANGED: " + " | ".join(changed)), ""]
    return "\n".join(lines)


def write(data: dict, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    md, js = directory / "results.md", directory / "results.json"
    js.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    md.write_text(render(data) + "\n", encoding="utf-8")
    return md, js
