"""Several Kubernetes releases in one command: `pytest suites/ --kubernetes-version=1.36,1.37`.

Each release is a pytest run of its own (its images, clusters, artifacts and report under
`<artifacts>/k8s-<minor>/`), one after the other, with the same arguments otherwise. Their
clusters get the release in their name (`<prefix>-v136-<mode>`), so `--keep-clusters` keeps
every release's side by side and `--reuse-clusters` never picks another release's cluster.
At the end `<artifacts>/report.md` puts every run's verdicts into one matrix, release x mode,
and `<artifacts>/releases.json` holds the same for tools; each run's own report keeps its evidence.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from . import config
from .gate import Gate
from .report import TITLE, cell_text, run_metadata
from .runner import DEFAULT, Runner

OPTION = "--kubernetes-version"
# Options each release's run gets its own value of (dropped from the arguments passed on).
PER_RELEASE = (OPTION, "--artifacts-dir", "--cluster-prefix", "--junitxml", "--junit-xml")
MATRIX_JSON = "releases.json"


def requested(value: str | None) -> list[str]:
    """The minors a comma list names, in the order given, each once; ValueError for an unknown one."""
    minors = []
    for part in (value or "").split(","):
        if part.strip():
            minor = config.k8s_minor(part)
            if minor not in minors:
                minors.append(minor)
    return minors


def several(value: str | None) -> bool:
    return bool(value) and "," in value


def _drop(args: list[str], names: tuple[str, ...]) -> list[str]:
    """`args` without the options `names` (`--opt=value` and `--opt value` forms)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in names:
            skip = True
        elif not a.startswith(tuple(f"{n}=" for n in names)):
            out.append(a)
    return out


def _value(args: list[str], name: str) -> str | None:
    """The last value of option `name` in `args`, either form."""
    found = None
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            found = args[i + 1]
        elif a.startswith(f"{name}="):
            found = a.split("=", 1)[1]
    return found


def cluster_prefix(prefix: str, minor: str) -> str:
    out = f"{prefix}-v{minor.replace('.', '')}"
    if len(out) > config.CLUSTER_PREFIX_MAX:
        raise ValueError(f"--cluster-prefix={prefix!r}: with several releases each gets '-v<release>' "
                         f"appended ({out!r}), which must fit {config.CLUSTER_PREFIX_MAX} characters")
    return out


def child_args(args: list[str], minor: str, artifacts: Path) -> list[str]:
    """A release's pytest arguments: the user's, with that release's own values of PER_RELEASE."""
    prefix = _value(args, "--cluster-prefix") or config.DEFAULT_CLUSTER_PREFIX
    junit = _value(args, "--junitxml") or _value(args, "--junit-xml")
    out = _drop(args, PER_RELEASE) + [f"{OPTION}={minor}", f"--artifacts-dir={artifacts}",
                                      f"--cluster-prefix={cluster_prefix(prefix, minor)}"]
    if junit:
        out.append(f"--junitxml={artifacts / Path(junit).name}")
    return out


def exit_code(codes: list[int]) -> int:
    """One exit code for the runs: a failed test wins, then the first other non-zero."""
    bad = [c for c in codes if c]
    return 1 if 1 in bad else (bad[0] if bad else 0)


# pytest's codes after which the next release is not started: interrupted, internal error, usage
# error (the same arguments would fail the same way).
STOP = (2, 3, 4)


def run_each(minors: list[str], args: list[str], base: Path, cwd: Path, runner: Runner = DEFAULT) -> int:
    """Run pytest with `args` once per release in `minors`; write the matrix; one exit code."""
    runs = []
    for i, minor in enumerate(minors, 1):
        artifacts = base / f"k8s-{minor}"
        argv = [sys.executable, "-m", "pytest", *child_args(args, minor, artifacts)]
        print(f"svc-harness: Kubernetes {minor} ({i} of {len(minors)}): {' '.join(argv[1:])}", flush=True)
        res = runner.run(argv, timeout=None, check=False, cwd=str(cwd), passthrough=True,
                         env={config.K8S_VERSION_ENV: minor})
        runs.append((minor, artifacts, res.returncode, res.seconds))
        print(f"svc-harness: Kubernetes {minor}: exit {res.returncode} after {res.seconds / 60:.1f} min; "
              f"report {artifacts / 'report.md'}", flush=True)
        if res.returncode in STOP or not 0 <= res.returncode < 128:  # or ended by a signal
            break
    md = write_matrix(base, runs, minors)
    print(f"svc-harness: release x mode report: {md}", flush=True)
    return exit_code([r[2] for r in runs])


def _load(artifacts: Path) -> dict | None:
    try:
        return json.loads((artifacts / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def matrix(runs: list[tuple[str, Path, int, float]], minors: list[str]) -> dict:
    """releases.json: per release its run (exit, minutes, gate, totals), per experiment its verdicts."""
    releases, experiments = [], {}
    for minor, artifacts, code, seconds in runs:
        data = _load(artifacts)
        rel = {"minor": minor, "kubernetes": config.versions(minor)["KUBERNETES_VERSION"], "exit": code,
               "minutes": round(seconds / 60, 1), "report": str(artifacts / "report.md"),
               "modes": [], "totals": {}, "gate": {}, "engines": {}}
        if data:
            rel.update(kubernetes=data.get("run", {}).get("kubernetes") or rel["kubernetes"],
                       modes=data.get("modes", []), totals=data.get("totals", {}), gate=data.get("gate", {}),
                       engines=data.get("engines", {}))
            for e in data.get("experiments", []):
                row = experiments.setdefault(e["experiment"], {"experiment": e["experiment"],
                                                                "title": e.get("title", ""), "verdicts": {}})
                row["verdicts"][rel["kubernetes"]] = e.get("verdicts", {})
        releases.append(rel)
    not_started = [m for m in minors if m not in {r["minor"] for r in releases}]
    return {"title": TITLE, "run": {k: v for k, v in run_metadata().items() if k != "kubernetes"},
            "releases": releases, "not_started": not_started,
            "experiments": [experiments[k] for k in sorted(experiments)]}


def render_markdown(data: dict) -> str:
    cols = [(r["kubernetes"], m) for r in data["releases"] for m in r["modes"]]
    out = [f"# {TITLE}: release x mode", ""]
    for r in data["releases"]:
        t = r["totals"]
        told = (f"{t.get('pass', 0)} passed, {t.get('fail', 0)} failed, {t.get('skip', 0)} skipped"
                if t else "no report.json (the run stopped before writing one)")
        out.append(f"- **{r['kubernetes']}** ({r['minor']}): exit {r['exit']} after {r['minutes']} min; "
                   f"{told}; [its report]({Path(r['report']).parent.name}/report.md)")
    for m in data["not_started"]:
        out.append(f"- **{m}**: not started (an earlier release's run stopped the series)")
    out.append("")
    if cols:
        out += ["| Experiment | " + " | ".join(f"{v} {m}" for v, m in cols) + " |",
                "|---|" + "---|" * len(cols)]
        for e in data["experiments"]:
            cells = [(e["verdicts"].get(v, {}).get(m) or "-").upper() for v, m in cols]
            out.append(f"| {cell_text(e['experiment'] + ': ' + e['title'])} | " + " | ".join(cells) + " |")
    ran = [(r["kubernetes"], m, e) for r in data["releases"] for m, e in r["engines"].items() if e]
    if ran:
        out += ["", "Where each column ran:", ""] + [f"- **{v} {m}**: {e}" for v, m, e in ran]
    gates = [(r["kubernetes"], line) for r in data["releases"] for line in Gate.from_dict(r["gate"]).lines()]
    if gates:
        out += ["", "## Gate: one verdict per release and mode", ""] + [f"- {v} {line}" for v, line in gates]
    return "\n".join(out) + "\n"


def write_matrix(base: Path, runs: list[tuple[str, Path, int, float]], minors: list[str]) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    data = matrix(runs, minors)
    (base / MATRIX_JSON).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    md = base / "report.md"
    md.write_text(render_markdown(data), encoding="utf-8")
    return md
