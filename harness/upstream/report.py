"""The report's upstream sections: one table per mode (spec, verdict, duration, failure) and coverage.

Each upstream pytest item appends a `Row` to `upstream-<worker>.jsonl` in the
artifacts directory (one file per xdist worker, no locking), like the
experiments' evidence; harness.report merges them into report.md/report.json.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .coverage import COVERAGE
from .specs import plain, short

FILE_GLOB = "upstream-*.jsonl"


@dataclass
class Row:
    mode: str
    spec: str          # full spec text
    verdict: str       # pass / fail / skip
    seconds: float
    message: str = ""  # failure message or skip reason
    log: str = ""      # the spec's log (failures) or the mode's e2e.log


class Recorder:
    def __init__(self, directory: Path, worker: str):
        self.path = Path(directory) / f"upstream-{worker}.jsonl"

    def record(self, row: Row) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(row)) + "\n")


def load(directory: Path) -> list[Row]:
    rows = []
    for p in sorted(Path(directory).glob(FILE_GLOB)):
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(Row(**json.loads(line)))
            except (ValueError, TypeError):
                continue  # a worker killed mid-write
    return rows


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def counts(rows: list[Row]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        c = out.setdefault(r.mode, {"pass": 0, "fail": 0, "skip": 0})
        c[r.verdict] = c.get(r.verdict, 0) + 1
    return out


def runs(directory: Path) -> dict[str, list[dict]]:
    """Each mode's e2e runs as harness.upstream.run wrote them (upstream/<mode>/run.json, or
    upstream/<mode>/part-<k>/run.json when its specs were split between its clusters)."""
    out: dict[str, list[dict]] = {}
    for p in sorted(Path(directory).glob("upstream/*/run.json")) + sorted(Path(directory).glob("upstream/*/part-*/run.json")):
        try:
            run = json.loads(p.read_text())
        except ValueError:
            continue
        out.setdefault(run.get("mode") or p.parent.name, []).append(run)
    return out


def _run_lines(runs: list[dict]) -> list[str]:
    out = []
    for run in runs:
        pulled = ", ".join(run.get("pulled") or []) or "none (every image was on the nodes already)"
        head = f"e2e.test run (part {run['part']})" if run.get("part") else "e2e.test run"
        on = f" on {run['cluster']}" if run.get("cluster") else ""
        out.append(f"{head}: {run['specs']} specs in {run['seconds']:.0f}s{on}, ginkgo exit {run['returncode']}; "
                   f"log `{run['out_dir']}/e2e.log`; images pulled from a registry: {pulled}")
    if len(out) > 1:
        out = [f"- {line}" for line in out]
    return [*out, ""] if out else []


def render_markdown(rows: list[Row], directory: Path | None = None) -> str:
    if not rows:
        return ""
    by_mode = runs(directory) if directory else {}
    out = ["", "# Upstream Kubernetes `[sig-network] Services` e2e specs", "",
           "Upstream's own specs (e2e.test of the pinned Kubernetes version), run on each mode's cluster "
           "in the same session (`--upstream-conformance`).", ""]
    for mode, c in counts(rows).items():
        out += [f"## {mode}: {c['pass']} passed, {c['fail']} failed, {c['skip']} skipped", "",
                *_run_lines(by_mode.get(mode, [])),
                "| spec | verdict | duration | failure / skip reason |", "|---|---|---|---|"]
        for r in (r for r in rows if r.mode == mode):
            why = ""
            if r.verdict != "pass":
                why = (r.message.splitlines() or [""])[0][:300] + (f" (log: `{r.log}`)" if r.log else "")
            out.append(f"| {_cell(short(r.spec))} | {r.verdict.upper()} | {r.seconds:.1f}s | {_cell(why)} |")
        out.append("")
    out += coverage_markdown(rows)
    return "\n".join(out).rstrip("\n") + "\n"


def coverage_markdown(rows: list[Row]) -> list[str]:
    """Each article experiment beside the upstream specs that check the same behaviour, with their verdicts."""
    verdicts: dict[str, list[str]] = {}
    for r in rows:
        verdicts.setdefault(plain(r.spec), []).append(f"{r.mode} {r.verdict.upper()}")
    out = ["## Article experiments beside upstream specs", "",
           "| experiment | upstream specs checking the same behaviour (verdicts this run) | only this harness checks |",
           "|---|---|---|"]
    for c in COVERAGE:
        specs = "<br>".join(f"{s} ({', '.join(verdicts.get(plain(s), ['not run']))})" for s in c.specs) or "none"
        out.append(f"| {c.experiment} | {_cell(specs)} | {_cell(c.only_here or '-')} |")
    return out + [""]


def render_json(rows: list[Row], directory: Path | None = None) -> dict:
    return {"counts": counts(rows), "runs": runs(directory) if directory else {}, "specs": [asdict(r) for r in rows],
            "coverage": [{"experiment": c.experiment, "specs": list(c.specs), "only_here": c.only_here}
                         for c in COVERAGE]}
