"""Which upstream specs a focus/skip selects, their pytest ids, and ginkgo's JSON report read back.

The pytest items must exist at collection time, before any cluster: the list
comes from `e2e.test --ginkgo.dry-run` (no cluster needed), cached under the
harness cache keyed by the e2e.test build and the focus/skip expressions.
"""
from __future__ import annotations

import hashlib
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import config
from ..owners import write_json
from ..runner import DEFAULT, Runner

DEFAULT_FOCUS = r"\[sig-network\] Services"
# What kind cannot or should not run in a shared, parallel run: [Serial]/[Disruptive] specs change
# the whole cluster, [Slow] ones take minutes each, [Flaky] ones are known to flake, [Feature:*]
# needs optional features, and LoadBalancer specs need a cloud provider's load balancer.
DEFAULT_SKIP = r"\[Serial\]|\[Disruptive\]|\[Slow\]|\[Flaky\]|\[Feature:[^\]]+\]|LoadBalancer"
# Named focus expressions (--upstream-focus=smoke): one spec for most experiments the coverage
# table maps to upstream (E01-E03, E05, E06, E08, E09, E12) plus hairpin, for CI-sized runs.
# smoke-short: the half of smoke that is short in the UML guest too (under 100 s a spec there; the
# other half execs into pods many times and takes 140-190 s), for CI's ipvs step.
PRESETS = {
    "smoke": r"\[sig-network\] Services should (be rejected when no endpoints exist|serve a basic endpoint from pods"
             r"|have session affinity work for service with type clusterIP|be able to create a functioning NodePort"
             r"|support externalTrafficPolicy=Local for type=NodePort|respect internalTrafficPolicy=Local Pod to Pod$"
             r"|be able to change the type from ExternalName to ClusterIP|allow pods to hairpin back)",
    "smoke-short": r"\[sig-network\] Services should (be rejected when no endpoints exist"
                   r"|support externalTrafficPolicy=Local for type=NodePort"
                   r"|be able to change the type from ExternalName to ClusterIP|allow pods to hairpin back)",
}
# Specs a mode cannot pass by design, skipped in that mode with the reason (data, like the
# per-mode expectations). Upstream's own ipvs job on kind (ci-kubernetes-kind-network-ipvs) skips
# `session.affinity.timeout` too.
MODE_SKIPS = {
    "ipvs": [(r"session affinity timeout",
              "IPVS keeps a client sticky while its old connections sit in TIME_WAIT (a fixed 120 s in the "
              "kernel), so an affinity timeout under 2 minutes acts as 120 s (kubernetes#89358); upstream's "
              "ipvs jobs skip these specs too (test-infra#37522)")],
}
PREFIX = "[sig-network] Services "
FAILED_STATES = ("failed", "panicked", "timedout", "aborted", "interrupted")


@dataclass(frozen=True)
class Spec:
    name: str        # ginkgo's full text, e.g. "[sig-network] Services should serve a basic endpoint ..."
    id: str          # pytest id: the name without the common prefix, as words joined by "-"


def mode_skip(mode: str, name: str) -> str | None:
    """Why spec `name` is not run in `mode` (MODE_SKIPS), or None."""
    for pattern, why in MODE_SKIPS.get(mode, []):
        if re.search(pattern, name):
            return why
    return None


def short(name: str) -> str:
    """The spec's text without the prefix every selected spec shares."""
    return name.removeprefix(PREFIX)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", short(name)).strip("-")


def plain(name: str) -> str:
    """A spec's words without the common prefix and [Tags], for matching names written by hand."""
    return " ".join(re.sub(r"\[[^\]]*\]", " ", short(name)).split())


def to_specs(names: list[str]) -> list[Spec]:
    """Names -> Specs with unique ids (a clash gets -2, -3, ...), in the given order."""
    out, seen = [], {}
    for n in names:
        base = slug(n)
        seen[base] = seen.get(base, 0) + 1
        out.append(Spec(n, base if seen[base] == 1 else f"{base}-{seen[base]}"))
    return out


def go_regex_literal(text: str) -> str:
    """`text` as a Go (RE2) regexp matching it literally (Python's re.escape escapes what RE2 refuses)."""
    return re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", text)


def focus_expression(value: str) -> str:
    """--upstream-focus: a preset's name or a ginkgo regexp."""
    return PRESETS.get(value, value)


def focus_on(names: list[str]) -> str:
    """A ginkgo --focus that selects exactly these specs (and any whose text contains one of them)."""
    return "|".join(go_regex_literal(n) for n in names)


@dataclass
class SpecResult:
    name: str
    state: str           # ginkgo's: passed, failed, skipped, panicked, timedout, ...
    seconds: float
    message: str = ""    # failure message or skip reason
    location: str = ""   # file:line of the failure
    output: str = ""     # what the spec wrote (GinkgoWriter), for its log file

    @property
    def verdict(self) -> str:
        if self.state == "passed":
            return "pass"
        if self.state in ("skipped", "pending"):
            return "skip"
        return "fail"


def read_report(path: Path) -> dict[str, SpecResult]:
    """Ginkgo's --json-report: full spec text -> result, for the It nodes (suite nodes left out)."""
    out: dict[str, SpecResult] = {}
    for suite in json.loads(Path(path).read_text()):
        for r in suite.get("SpecReports") or []:
            if r.get("LeafNodeType") != "It":
                continue
            # ginkgo's FullText(): texts joined by one space, kept as they are (some end in a space).
            name = " ".join([*(r.get("ContainerHierarchyTexts") or []), r.get("LeafNodeText", "")])
            failure = r.get("Failure") or {}
            loc = failure.get("Location") or {}
            out[name] = SpecResult(
                name=name, state=r.get("State", "?"), seconds=(r.get("RunTime") or 0) / 1e9,
                message=(failure.get("Message") or "").strip(),
                location=f"{loc.get('FileName', '')}:{loc.get('LineNumber', '')}" if loc.get("FileName") else "",
                output=(r.get("CapturedGinkgoWriterOutput") or "") + (r.get("CapturedStdOutErr") or ""))
    return out


def list_specs(e2e_test: Path, focus: str, skip: str, runner: Runner = DEFAULT) -> list[str]:
    """The specs focus/skip select, from a dry run; cached by the e2e.test build and the expressions."""
    st = Path(e2e_test).stat()
    key = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}\0{focus}\0{skip}".encode()).hexdigest()[:16]
    cache = config.CACHE / "upstream" / f"specs-{key}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    with tempfile.TemporaryDirectory(prefix="svc-harness-dryrun-") as tmp:
        report = Path(tmp) / "dry-run.json"
        # A dry run walks the spec tree without a cluster; the kubeconfig is never read.
        runner.run([str(e2e_test), "--ginkgo.dry-run", f"--ginkgo.focus={focus}", f"--ginkgo.skip={skip}",
                    f"--ginkgo.json-report={report}", "--ginkgo.no-color", "--provider=skeleton",
                    f"--kubeconfig={Path(tmp) / 'none'}"],
                   timeout=300, cwd=tmp, what="listing upstream specs (e2e.test --ginkgo.dry-run)")
        names = sorted(n for n, r in read_report(report).items() if r.state == "passed")
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_json(cache, names)
    return names
