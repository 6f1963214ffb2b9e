"""The reproduction report: what each experiment claimed, did and observed, per mode.

Tests record `Evidence` as they run; each pytest-xdist worker appends to its
own JSON-lines file, so no locking is needed. At the end the files are merged
into report.md (for people) and report.json (for tools), with PNG charts where
a picture says more than counts (the per-backend distribution of E04 per mode).
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .cli import tool_prog
from . import config

log = logging.getLogger(__name__)

VERDICTS = ("pass", "fail", "skip")
# report.json's layout; harness/report.schema.json describes it. Bump when a field changes meaning.
SCHEMA_VERSION = 1
# Known modes come first, in this order; any other mode follows as first seen.
MODE_ORDER = ("iptables", "ipvs", "nftables")
TITLE = "Kubernetes Services under kube-proxy modes: reproduction report"


@dataclass
class Evidence:
    experiment: str
    mode: str
    title: str             # short name of the experiment
    claim: str             # the article's claim, in English
    action: str            # what the test did, e.g. the probe it ran
    observed: list[str]    # evidence lines (see expectations.check)
    verdict: str           # "pass", "fail" or "skip"
    detail: str = ""       # why it failed or was skipped
    broken: str = ""       # deliberate breaks the run was made with (harness.breaks), if any
    phase: str = "call"    # pytest phase the verdict comes from ("setup": the bench, not the claim)
    samples: list = field(default_factory=list)  # counts per checked sample (Lab.check), for charts
    engine: str = ""       # where the mode's cluster ran: engine, kernel, size (and why smaller than 3)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {self.verdict!r}")


@dataclass
class Recorder:
    """Appends evidence to `directory/evidence-<worker>.jsonl`."""
    directory: Path
    worker: str            # e.g. xdist's worker_id ("gw0", or "master")
    path: Path = field(init=False)

    def __post_init__(self):
        self.directory = Path(self.directory)
        self.path = self.directory / f"evidence-{self.worker}.jsonl"

    def record(self, ev: Evidence) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # One write per line, so a crash leaves at most one partial line.
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(ev)) + "\n")
        log.debug("recorded %s/%s: %s", ev.experiment, ev.mode, ev.verdict)


def load(directory: Path) -> list[Evidence]:
    """All recorded evidence, worker files in name order, lines in file order."""
    evs = []
    for path in sorted(Path(directory).glob("evidence-*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                evs.append(Evidence(**json.loads(line)))
            except (ValueError, TypeError) as e:
                # A worker killed mid-write must not cost us the whole report.
                log.warning("skipping unreadable evidence %s:%d: %s", path, n, e)
    return evs


def _modes(evs: list[Evidence]) -> list[str]:
    seen = list(dict.fromkeys(ev.mode for ev in evs))
    return [m for m in MODE_ORDER if m in seen] + [m for m in seen if m not in MODE_ORDER]


def _by_experiment(evs: list[Evidence]) -> dict[str, list[Evidence]]:
    """Evidence grouped per experiment, in experiment order (E00, E01, ...), not the order files ran."""
    groups: dict[str, list[Evidence]] = {}
    for ev in evs:
        groups.setdefault(ev.experiment, []).append(ev)
    return dict(sorted(groups.items()))


def _cell(evs: list[Evidence]) -> str | None:
    """One verdict per (experiment, mode): any fail wins, then any pass."""
    verdicts = {ev.verdict for ev in evs}
    for v in ("fail", "pass", "skip"):
        if v in verdicts:
            return v
    return None


def mode_engines(evs, modes: list[str]) -> dict[str, str]:
    """Where each mode's clusters ran (several with one guest per xdist worker), from the evidence."""
    return {m: "; ".join(dict.fromkeys(ev.engine for ev in evs if ev.mode == m and ev.engine)) for m in modes}


def _first(evs: list[Evidence], attr: str) -> str:
    return next((getattr(ev, attr) for ev in evs if getattr(ev, attr)), "")


def render_json(evs: list[Evidence]) -> dict:
    modes = _modes(evs)
    experiments = []
    for exp, group in _by_experiment(evs).items():
        cells = {m: _cell([ev for ev in group if ev.mode == m]) for m in modes}
        experiments.append({
            "experiment": exp,
            "title": _first(group, "title"),
            "claim": _first(group, "claim"),
            "verdicts": {m: v for m, v in cells.items() if v},
            "evidence": [asdict(ev) for ev in group],
        })
    totals = {v: sum(ev.verdict == v for ev in evs) for v in VERDICTS}
    engines = mode_engines(evs, modes)
    data = {"schema": SCHEMA_VERSION, "title": TITLE, "run": run_metadata(), "modes": modes, "engines": engines,
            "totals": totals, "experiments": experiments}
    from . import migration  # here, not on top: migration imports this module
    moving = migration.compare(evs)
    if moving is not None:  # only a run with both ipvs and nftables has the key
        data[migration.KEY] = moving
    return data


def run_metadata() -> dict:
    """When and from what the report was made (report.json's "run")."""
    import datetime
    import subprocess
    try:
        commit = subprocess.run(["git", "-C", str(config.REPO), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    v = config.versions()
    return {"generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": commit, "kubernetes": v["KUBERNETES_VERSION"], "kind": v.get("KIND_VERSION", "")}


def cell_text(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _fence(lines: list[str]) -> list[str]:
    # Use a fence longer than any backtick run in the text, so it cannot close early.
    text = "\n".join(lines)
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return [ticks + "text", *lines, ticks]


# Experiments drawn as charts: experiment id -> what the chart shows.
CHARTS = {"E04": "answers per backend through one ClusterIP, per mode (dashed: a uniform share)"}


def chart_distribution(evs: list[Evidence], experiment: str, path: Path) -> bool:
    """Bar chart per mode of answers per backend in `experiment`'s checked samples; False if none."""
    per_mode: dict[str, dict[str, int]] = {}
    for ev in evs:
        if ev.experiment != experiment:
            continue
        for s in ev.samples:
            counts = per_mode.setdefault(ev.mode, {})
            for name in s.get("expected_backends", []):
                counts.setdefault(name, 0)  # a backend that never answered is a bar of 0
            for name, n in s.get("backends", {}).items():
                counts[name] = counts.get(name, 0) + n
    modes = [m for m in _modes(evs) if per_mode.get(m)]
    if not modes:
        return False
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(modes), figsize=(3.6 * len(modes), 3.2), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        counts = per_mode[mode]
        names = sorted(counts)
        total = sum(counts.values())
        # Pod names differ per cluster; the suffix after the ReplicaSet hash tells them apart.
        ax.bar([n.rsplit("-", 1)[-1] for n in names], [counts[n] for n in names], color="tab:blue")
        if names:
            ax.axhline(total / len(names), color="black", linestyle="--", linewidth=1)
        ax.set_title(f"{mode} ({total} answers)", fontsize=9)
        ax.set_ylabel("answers")
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"{experiment}: {CHARTS.get(experiment, '')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def render_markdown(evs: list[Evidence], gate=None, charts: dict[str, str] | None = None) -> str:
    """`gate` (harness.gate.Gate): modes that did not run go on top (its verdict lines: render_gate)."""
    modes = _modes(evs)
    groups = _by_experiment(evs)
    n = {v: sum(ev.verdict == v for ev in evs) for v in VERDICTS}
    out = [f"# {TITLE}", ""]
    gate_lines = gate.lines() if gate is not None else []
    not_run = [line for line in gate_lines if ": NOT RUN" in line]
    if not_run:
        out += ["> **NOT RUN** -- these requested modes tested nothing:", ">",
                *(f"> - {line}" for line in not_run), ""]
    out += [f"{len(evs)} checks: {n['pass']} passed, {n['fail']} failed, {n['skip']} skipped.", ""]
    if not evs:
        return "\n".join(out + ["No evidence was recorded."]) + "\n"
    broken = sorted({ev.broken for ev in evs if ev.broken})
    if broken:
        out += ["> **This run was broken on purpose** (`--break`), so failures are the point: "
                + " / ".join(broken), ""]

    # The matrix first: one row per experiment, one column per mode.
    out += ["| Experiment | " + " | ".join(modes) + " |",
            "|---|" + "---|" * len(modes)]
    for exp, group in groups.items():
        title = _first(group, "title")
        cells = [(_cell([ev for ev in group if ev.mode == m]) or "-").upper() for m in modes]
        out.append(f"| {cell_text(f'{exp}: {title}' if title else exp)} | "
                   + " | ".join(cells) + " |")

    engines = mode_engines(evs, modes)
    if any(engines.values()):
        out += ["", "Where each mode ran:", ""] + [f"- **{m}**: {e}" for m, e in engines.items() if e]
    from . import migration  # here, not on top: migration imports this module
    out += migration.render_markdown(migration.compare(evs))

    # Then the evidence, experiment by experiment, mode by mode.
    for exp, group in groups.items():
        title, claim = _first(group, "title"), _first(group, "claim")
        out += ["", f"## {exp}" + (f" -- {title}" if title else ""), ""]
        if claim:
            out += [f"**Claim:** {claim}", ""]
        if charts and exp in charts:
            out += [f"![{exp}: {CHARTS.get(exp, 'chart')}]({charts[exp]})", ""]
        for m in modes:
            for ev in (ev for ev in group if ev.mode == m):
                out += [f"### {m}", ""]
                if ev.action:
                    out += ["**Action:**", "", *(f"- `{a}`" for a in ev.action.splitlines()), ""]
                if ev.observed:
                    out += ["**Observed:**", "", *_fence(ev.observed), ""]
                out.append(f"**Verdict:** {ev.verdict.upper()}")
                if ev.detail and ev.verdict != "pass":
                    lines = ev.detail.splitlines()
                    # A failure message spans lines and keeps its layout; a skip reason is one line.
                    out += ["", *(_fence(lines) if len(lines) > 1
                                  else [f"**Detail:** {ev.detail}"])]
                out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def render_gate(gate) -> str:
    """The report's last lines: one verdict per mode (harness.gate)."""
    lines = gate.lines() if gate is not None else []
    if not lines:
        return ""
    return "\n".join(["", "## Gate: one verdict per mode", "", *(f"- {line}" for line in lines)]) + "\n"


def write_report(directory: Path, gate=None, extra: dict | None = None) -> tuple[Path, Path]:
    """Merge every worker's evidence into report.md and report.json in `directory`
    (`extra`: more top-level keys for report.json)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    evs = load(directory)
    from .upstream import report as upstream  # upstream e2e specs (--upstream-conformance), if any ran
    ups = upstream.load(directory)
    md, js = directory / "report.md", directory / "report.json"
    charts = {}
    for exp in CHARTS:
        png = directory / f"report-{exp}.png"
        png.unlink(missing_ok=True)  # never show a chart of an earlier run
        if chart_distribution(evs, exp, png):
            charts[exp] = png.name
    # The gate's per-mode lines close the report, after the upstream specs' tables.
    md.write_text(render_markdown(evs, gate, charts) + upstream.render_markdown(ups, directory)
                  + render_gate(gate), encoding="utf-8")
    data = render_json(evs)
    if ups:
        data["upstream"] = upstream.render_json(ups, directory)
    if gate is not None:
        data["gate"] = gate.as_dict()
    data.update(extra or {})
    js.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    log.info("report: %d checks -> %s, %s", len(evs), md, js)
    return md, js


def merge(into: Path, others: list[Path]) -> tuple[Path, Path]:
    """Fold the experiments of runs made separately into `into`'s report, so one matrix shows
    every mode (CI runs ipvs in its own step, in the guest). Each other run's evidence is copied
    in beside `into`'s own (the next run in `into` clears it again); the gate's per-mode lines
    are rebuilt from each run's report.json. Upstream spec rows and their runs' headers
    (upstream/<mode>/run.json, or one per part) come along the same way."""
    from .gate import Gate
    into = Path(into)
    gate, merged = Gate(), []
    for d in [into, *map(Path, others)]:
        js = d / "report.json"
        if not js.exists():
            raise SystemExit(f"no report.json in {d}: merge reports of finished runs only")
        data = json.loads(js.read_text(encoding="utf-8"))
        run = Gate.from_dict(data.get("gate", {}))
        for mode, tally in run.modes.items():
            if d == into and mode in data.get("merged_modes", []):
                continue  # from an earlier merge: the other run brings it again
            if mode in gate.modes:
                raise SystemExit(f"mode {mode} is in more than one of the merged runs ({d})")
            gate.requested.append(mode)
            gate.modes[mode] = tally
            if mode in run.unavailable:
                gate.unavailable[mode] = run.unavailable[mode]
            if d != into:
                merged.append(mode)
        if d != into:
            for prefix in ("evidence-", "upstream-"):
                for f in d.glob(f"{prefix}*.jsonl"):
                    shutil.copyfile(f, into / f.name.replace(prefix, f"{prefix}{d.name}-", 1))
            for run in [*d.glob("upstream/*/run.json"), *d.glob("upstream/*/part-*/run.json")]:
                copy = into / run.relative_to(d)
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run, copy)
    return write_report(into, gate, extra={"merged_modes": merged})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=tool_prog("python -m harness.report"), description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge", help="put the experiments of separate runs into one report")
    m.add_argument("into", type=Path, help="artifacts directory whose report gets the others' modes")
    m.add_argument("others", type=Path, nargs="+", help="artifacts directories of the other runs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    md, _ = merge(args.into, args.others)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
