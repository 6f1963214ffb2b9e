"""One e2e.test run per mode, read back per spec by that mode's pytest items.

The first item of a mode that needs its verdict runs upstream's specs (the ones
selected in this pytest session for that mode) through the ginkgo CLI against
the mode's cluster, behind a file lock in the run's shared directory, so every
xdist worker reads the same run. When the mode has a cluster per xdist worker
(a guest each), the specs are split into as many parts: a worker runs its own
part on its cluster first, then any part no one has started, then waits for the
rest. Items then take their spec's verdict from ginkgo's JSON report: passed ->
pass, failed/panicked/timed out -> fail (with the message and a per-spec log),
skipped -> skip with upstream's reason.

The specs use agnhost only (baked into the node image); before the run each node
is checked for it, and afterwards the images each node's containerd gained are
listed: anything there was pulled from a registry and is reported.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from .. import config, runstate
from ..runner import DEFAULT, Runner, Step
from . import report
from .build import agnhost_ref
from .specs import Spec, SpecResult, focus_on, read_report

log = logging.getLogger(__name__)

RUN_TIMEOUT = 2 * 3600     # a whole run of one mode (ginkgo's own --timeout is a little shorter)


@dataclass
class ModeRun:
    mode: str
    out_dir: str             # artifacts/upstream/<mode>: e2e.log, report.json, junit.xml, specs/
    returncode: int
    seconds: float
    specs: int               # how many specs were asked for
    pulled: list[str] = field(default_factory=list)   # images a node gained during the run
    error: str = ""          # why there are no results (the run could not start)
    cluster: str = ""        # the cluster it ran on
    part: str = ""           # "2/2" when the mode's specs were split between its clusters

    @property
    def log(self) -> Path:
        return Path(self.out_dir) / "e2e.log"

    @property
    def report(self) -> Path:
        return Path(self.out_dir) / "report.json"

    def results(self) -> dict[str, SpecResult]:
        if not hasattr(self, "_results"):
            self._results = read_report(self.report) if self.report.exists() else {}
        return self._results

    def check(self, spec: Spec, recorder: "report.Recorder") -> None:
        """Turn this spec's upstream verdict into the pytest item's outcome, and record it."""
        r = self.results().get(spec.name)
        where = f"log: {self.log}"
        if r is None:
            why = self.error or (f"e2e.test (via ginkgo) exited {self.returncode} after {self.seconds:.0f}s "
                                 f"without a result for this spec")
            recorder.record(report.Row(self.mode, spec.name, "fail", 0.0, why, str(self.log)))
            pytest.fail(f"upstream spec {spec.name!r} has no result: {why}\n  {where}", pytrace=False)
        if r.state == "skipped" and not r.message:
            # ginkgo lists the specs its --focus left out as skipped, without a reason: this one never ran
            why = f"e2e.test did not run this spec (its --focus left it out; see {Path(self.out_dir) / 'command.txt'})"
            recorder.record(report.Row(self.mode, spec.name, "fail", 0.0, why, str(self.log)))
            pytest.fail(f"upstream spec {spec.name!r}: {why}\n  {where}", pytrace=False)
        spec_log = Path(self.out_dir) / "specs" / f"{spec.id}.log"
        if r.verdict != "pass" and r.output:
            spec_log.parent.mkdir(parents=True, exist_ok=True)
            spec_log.write_text(f"{r.name}\nstate: {r.state}\n{r.location}\n{r.message}\n\n{r.output}")
            where = f"spec log: {spec_log}; full log: {self.log}"
        message = r.message + (f"\n  at {r.location}" if r.location else "")
        recorder.record(report.Row(self.mode, spec.name, r.verdict, r.seconds, r.message,
                                   str(spec_log if spec_log.exists() else self.log)))
        if r.verdict == "skip":
            pytest.skip(f"upstream spec skipped itself: {r.message or r.state}")
        if r.verdict == "fail":
            pytest.fail(f"upstream spec {r.state} after {r.seconds:.1f}s: {message}\n  {where}", pytrace=False)


@dataclass
class Parts:
    """A mode's upstream verdicts, from the one or several runs its specs were split into."""
    runs: list[ModeRun]
    owner: dict[str, int]   # spec name -> the run that was asked for it

    def check(self, spec: Spec, recorder: "report.Recorder") -> None:
        # Only the run asked for the spec: ginkgo's report lists every spec it filtered out as skipped.
        self.runs[self.owner.get(spec.name, 0)].check(spec, recorder)


def split(wanted: list[str], count: int) -> list[list[str]]:
    """The specs dealt into `count` parts, in the order they were selected."""
    return [wanted[k::count] for k in range(count)]


def for_mode(pyconfig: pytest.Config, cluster, wanted: list[str], runner: Runner = DEFAULT) -> Parts:
    """The mode's runs: each made by the first caller that takes it (any xdist worker), read by the rest."""
    mine, count = getattr(cluster, "part", (0, 1))
    parts = split(wanted, count)
    opts = pyconfig.option

    def once(k: int):
        def run() -> dict:
            out_dir = Path(opts.artifacts_dir) / "upstream" / cluster.mode / (f"part-{k + 1}" if count > 1 else "")
            label = f"{k + 1}/{count}" if count > 1 else ""
            try:
                done = execute(opts, cluster, parts[k], out_dir, runner)
            except Exception as e:  # a run that could not start is a result too: its spec items fail with it
                done = ModeRun(cluster.mode, str(out_dir), -1, 0.0, len(parts[k]),
                               error=f"the upstream run could not start: {e}")
            done.cluster, done.part = cluster.name, label
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "run.json").write_text(json.dumps(asdict(done), indent=1))  # for the report's header line
            return {"run": asdict(done)}
        key = f"upstream-{cluster.mode}" + (f"-part-{k + 1}-of-{count}" if count > 1 else "")
        # Once per mode (or part), not per cluster: one e2e run on any of the mode's clusters is the mode's.
        return ModeRun(**runstate.run_once(runstate.of(pyconfig).run_dir, key, run)["run"])

    # This worker's own part first, so each part starts on its own cluster at once; then the others,
    # which a worker whose items are done takes over instead of waiting.
    order = [mine % count] + [k for k in range(count) if k != mine % count]
    runs = {k: once(k) for k in order}
    return Parts([runs[k] for k in range(count)], {name: k for k, part in enumerate(parts) for name in part})


def ginkgo_argv(bins: dict[str, Path], opts, out_dir: Path, kubeconfig: str, wanted: list[str],
                num_nodes: int) -> list[str]:
    procs = max(1, min(opts.upstream_procs, len(wanted)))
    return [str(bins["ginkgo"]), f"--procs={procs}", "-v", "--no-color", "--silence-skips",
            # Exactly the specs this session selected (-k and all), still minus the skip expression.
            f"--focus={focus_on(wanted)}", f"--skip={opts.upstream_skip}",
            f"--timeout={RUN_TIMEOUT - 300}s", f"--output-dir={out_dir}",
            "--json-report=report.json", "--junit-report=junit.xml",
            str(bins["e2e.test"]), "--",
            # Without --num-nodes upstream's node-count guards read -1 and skip (e.g. ETP=Local NodePort).
            f"--kubeconfig={kubeconfig}", "--provider=skeleton", f"--num-nodes={num_nodes}",
            "--disable-log-dump=true"]


def execute(opts, cluster, wanted: list[str], out_dir: Path, runner: Runner = DEFAULT) -> ModeRun:
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    bins = {n: config.version_bin() / n for n in ("e2e.test", "ginkgo")}
    agnhost = agnhost_ref(config.versions())
    if not wanted:
        return ModeRun(cluster.mode, str(out_dir), 0, 0.0, 0)
    nodes = [cluster.node(n.name) for n in cluster.nodes] if cluster.is_kind else []
    before = {n.name: _images(n) for n in nodes}
    missing = [n.name for n in nodes if agnhost not in before[n.name]]
    if missing:
        # A node image made before agnhost was baked in (or --node-image): load it once.
        with Step(f"kind load {agnhost} into {cluster.name} (missing on {', '.join(missing)})"):
            runner.run([config.tool("kind"), "load", "docker-image", agnhost, "--name", cluster.name],
                       timeout=600, what=f"loading {agnhost} into {cluster.name}")
    argv = ginkgo_argv(bins, opts, out_dir, cluster.kube.kubeconfig, wanted, schedulable_nodes(cluster.kube))
    (out_dir / "command.txt").write_text(" ".join(argv) + "\n")
    started = time.monotonic()
    with Step(f"upstream e2e: {len(wanted)} specs on {cluster.name} (log {out_dir / 'e2e.log'})"):
        res = runner.run(argv, check=False, timeout=RUN_TIMEOUT, output=out_dir / "e2e.log", cwd=str(out_dir))
    seconds = time.monotonic() - started
    pulled = sorted({f"{n.name}: {img}" for n in nodes for img in _images(n) - before[n.name]})
    if pulled:
        log.warning("upstream e2e on %s pulled images from a registry: %s", cluster.name, pulled)
    error = "" if (out_dir / "report.json").exists() else (
        f"ginkgo exited {res.returncode} after {seconds:.0f}s and wrote no report; last output:\n{res.stderr[-1500:]}")
    return ModeRun(cluster.mode, str(out_dir), res.returncode, seconds, len(wanted), pulled, error)


def schedulable_nodes(kube) -> int:
    """Nodes pods can land on (a NoSchedule taint, e.g. kind's control plane, excludes a node)."""
    return sum(1 for n in kube.core.list_node().items
               if not n.spec.unschedulable and not any(t.effect == "NoSchedule" for t in n.spec.taints or []))


def _images(node) -> set[str]:
    """Image references in the node's containerd (k8s.io namespace), digests left out."""
    res = node.exec(["ctr", "-n", "k8s.io", "images", "ls", "-q"], check=False)
    return {line for line in res.stdout.split() if "@sha256:" not in line and not line.startswith("sha256:")}


def selected(items, mode: str) -> list[str]:
    """The upstream spec names this session runs in `mode` (after -k, --deselect...)."""
    out = []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if ("upstream_spec" in params and params.get("proxy_mode") == mode
                and item.get_closest_marker("skip") is None):  # e.g. specs.MODE_SKIPS
            out.append(params["upstream_spec"].name)
    return out



