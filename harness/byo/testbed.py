"""The --byo-kubeconfig path, tested against foreign kind clusters (not made by the harness).

    python -m harness.byo check --proxy-mode=iptables,nftables --xdist=0,2

For each mode: `kind create cluster` with the offline node image and a kind
config of its own (1 control plane + 2 workers, kubeProxyMode <mode>), a
kubeconfig in a file of its own, CoreDNS sealed by this test bed (never by the
harness), then the whole suite with `pytest suites/ --byo-kubeconfig <file>`,
serially and under `-n 2`. Each run must end with exit 0, no failure, a reason
for every skip and the plugin's "left as found" verdict; the test bed's own
snapshot of kube-system and the nodes, taken before the first run and after
the last, must not differ, and the cluster must still exist.

Once (first mode), the failure cases: an unreachable API server, an expired
client certificate, a context that does not exist, and only one schedulable
worker (the test bed cordons one, then uncordons it). Each must end in a
clear message and a non-zero exit with no namespace created.

Egress: the guard goes in before the first cluster starts (engine.ensure_egress_guard).
"""
from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .. import config, engine
from ..cli import parse_with_pytest_args, tool_prog
from ..cluster import kubelet_settings, seal_coredns, wait_system_ready
from ..kube import Kube
from ..runner import DEFAULT, Runner, Step
from . import snapshot

log = logging.getLogger(__name__)

KIND_CONFIG = """kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  kubeProxyMode: {mode}
nodes:
- role: control-plane
- role: worker
- role: worker
"""


@dataclass
class SuiteRun:
    label: str
    rc: int
    seconds: float
    passed: int = 0
    skipped: int = 0
    failed: int = 0
    skips: list[tuple[str, str]] = field(default_factory=list)   # (test, reason)
    problems: list[str] = field(default_factory=list)


@dataclass
class CaseResult:
    name: str
    rc: int
    seconds: float
    message: str
    problems: list[str] = field(default_factory=list)


class ForeignCluster:
    """A kind cluster made the way a CI step would make it: plain `kind create cluster`."""

    def __init__(self, name: str, mode: str, workdir: Path, image: str, runner: Runner = DEFAULT):
        self.name, self.mode, self.image, self.runner = name, mode, image, runner
        self.kubeconfig = workdir / f"{name}.kubeconfig"
        self.config_file = workdir / f"{name}.kind.yaml"

    def exists(self) -> bool:
        return self.name in self.runner.run([config.tool("kind"), "get", "clusters"], check=False).stdout.split()

    def create(self) -> float:
        if self.exists():
            raise SystemExit(f"a kind cluster named {self.name} exists already; it is not deleted here. "
                             f"Delete it (kind delete cluster --name {self.name}) or pass another --name")
        engine.engine_ready(self.runner)
        engine.ensure_egress_guard(self.runner)  # before any node starts
        text = KIND_CONFIG.format(mode=self.mode)
        # What anyone running kind here needs too: kubelet >= 1.35 on a cgroup v1 engine.
        kubelet = kubelet_settings(config.versions()["KUBERNETES_VERSION"],
                                   engine.HostEngine(self.runner).cgroup_version())
        if kubelet:
            text += "kubeadmConfigPatches:\n- |\n" + "".join(
                f"  {line}\n" for line in yaml.safe_dump({"apiVersion": "kubelet.config.k8s.io/v1beta1",
                                                        "kind": "KubeletConfiguration", **kubelet}).splitlines())
        self.config_file.write_text(text)
        with Step(f"kind create cluster {self.name} ({self.mode}, 1 control-plane + 2 workers)") as st:
            self.runner.run([config.tool("kind"), "create", "cluster", "--name", self.name, "--image", self.image,
                             "--config", str(self.config_file), "--kubeconfig", str(self.kubeconfig),
                             "--wait", "180s"], timeout=config.CLUSTER_CREATE_TIMEOUT,
                            what=f"kind create cluster {self.name}")
            wait_system_ready(self.kubeconfig, self.runner)
            seal_coredns(self.kubeconfig, self.runner)  # the test bed's doing: traffic stays on this machine
        return st.seconds

    def delete(self) -> None:
        self.runner.run([config.tool("kind"), "delete", "cluster", "--name", self.name,
                         "--kubeconfig", str(self.kubeconfig)], check=False, timeout=300)

    def control_plane(self) -> str:
        return f"{self.name}-control-plane"


def run_pytest(kubeconfig: Path, out: Path, extra: list[str], label: str, timeout: float = 3600) -> tuple[int, float, str]:
    """pytest suites/ --byo-kubeconfig ...; returns (exit code, seconds, output); output also in out/pytest.log."""
    out.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pytest", str(config.REPO / "suites"), "-p", "no:cacheprovider", "-q",
            "--byo-kubeconfig", str(kubeconfig), "--artifacts-dir", str(out), "--junitxml", str(out / "junit.xml"),
            *extra]
    log.info("%s: %s", label, " ".join(argv))
    started = time.monotonic()
    try:
        p = subprocess.run(argv, cwd=config.REPO, capture_output=True, text=True, timeout=timeout)
        rc, text = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, text = 124, f"(timed out after {timeout}s)\n{e.stdout or ''}"
    seconds = time.monotonic() - started
    (out / "pytest.log").write_text(text if isinstance(text, str) else text.decode(errors="replace"))
    return rc, seconds, text


def parse_junit(path: Path) -> tuple[int, int, int, list[tuple[str, str]]]:
    """(passed, skipped, failed incl. errors, [(test, skip reason)])."""
    if not path.exists():
        return 0, 0, 0, []
    passed = skipped = failed = 0
    skips = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif (s := case.find("skipped")) is not None:
            skipped += 1
            skips.append((name, (s.get("message") or "").strip()))
        else:
            passed += 1
    return passed, skipped, failed, skips


def suite_run(bed: ForeignCluster, xdist: int, out: Path, extra: list[str]) -> SuiteRun:
    label = f"{bed.mode}, {'serial' if xdist == 0 else f'-n {xdist}'}"
    args = [*extra, *(["-n", str(xdist)] if xdist else [])]
    rc, seconds, text = run_pytest(bed.kubeconfig, out, args, label)
    passed, skipped, failed, skips = parse_junit(out / "junit.xml")
    run = SuiteRun(label, rc, seconds, passed, skipped, failed, skips)
    if rc != 0:
        run.problems.append(f"pytest exit {rc} (see {out / 'pytest.log'})")
    if failed:
        run.problems.append(f"{failed} failed")
    if not passed:
        run.problems.append("nothing passed")
    run.problems += [f"skip without a reason: {t}" for t, why in skips if not why]
    if "left as found" not in text:
        run.problems.append("no 'left as found' verdict from the plugin")
    return run


# ---------------------------------------------------------------- failure cases
def _kubeconfig_variant(src: Path, dest: Path, change) -> Path:
    kc = yaml.safe_load(src.read_text())
    change(kc)
    dest.write_text(yaml.safe_dump(kc))
    return dest


def expired_certificate(bed: ForeignCluster, workdir: Path, runner: Runner = DEFAULT) -> tuple[str, str]:
    """A client certificate signed by the cluster's CA that expired in 2020 (PEM cert, PEM key)."""
    d = Path(tempfile.mkdtemp(dir=workdir, prefix="expired-"))
    for f in ("ca.crt", "ca.key"):  # read from the control-plane node (nothing changes there)
        (d / f).write_text(runner.run(["docker", "exec", bed.control_plane(), "cat", f"/etc/kubernetes/pki/{f}"]).stdout)
    (d / "index.txt").write_text("")
    (d / "serial").write_text("01\n")
    (d / "ca.cnf").write_text(f"[ca]\ndefault_ca = c\n[c]\ndatabase = {d}/index.txt\nserial = {d}/serial\n"
                              f"new_certs_dir = {d}\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n"
                              "organizationName = optional\n")
    runner.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "user.key"),
                "-out", str(d / "user.csr"), "-subj", "/O=system:masters/CN=svc-harness-expired"])
    runner.run(["openssl", "ca", "-batch", "-config", str(d / "ca.cnf"), "-cert", str(d / "ca.crt"),
                "-keyfile", str(d / "ca.key"), "-in", str(d / "user.csr"), "-out", str(d / "user.crt"),
                "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-notext"])
    cert, key = (d / "user.crt").read_text(), (d / "user.key").read_text()
    shutil.rmtree(d)  # the CA key must not linger on disk
    return cert, key


def failure_cases(bed: ForeignCluster, workdir: Path, out: Path) -> list[CaseResult]:
    import base64
    b64 = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    cert, key = expired_certificate(bed, workdir)

    def unreachable(kc):
        kc["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"  # discard port: nothing listens

    def expired(kc):
        kc["users"][0]["user"] = {"client-certificate-data": b64(cert), "client-key-data": b64(key)}

    cases = [
        ("unreachable API server", _kubeconfig_variant(bed.kubeconfig, workdir / "unreachable.kubeconfig", unreachable),
         [], "cannot reach"),
        ("expired client certificate", _kubeconfig_variant(bed.kubeconfig, workdir / "expired.kubeconfig", expired),
         [], "rejected the credentials"),
        ("context that does not exist", bed.kubeconfig, ["--byo-context", "svc-harness-no-such-context"],
         "no such context"),
        ("one schedulable worker (one cordoned)", bed.kubeconfig, [], "schedulable worker"),
        # Last, as they leave the cluster changed: the snapshot check must turn each run red.
        ("kube-system changed during the run (--break=kube-system-touched)", bed.kubeconfig,
         ["--break", "kube-system-touched"], "configmaps/kube-proxy:"),
        ("a test namespace left behind (--break=namespace-leaked)", bed.kubeconfig,
         ["--break", "namespace-leaked"], "test-namespaces-left/"),
        ("a ClusterRole changed during the run (--break=clusterrole-touched)", bed.kubeconfig,
         ["--break", "clusterrole-touched"], "clusterroles/view:"),
    ]
    kube = Kube(bed.kubeconfig)
    results = []
    for name, kc, extra, want in cases:
        cordon = name.startswith("one schedulable")
        worker = f"{bed.name}-worker2"
        if cordon:
            kube.kubectl("cordon", worker, what="cordoning a worker (test bed)")
        touch = "--break" in extra
        namespaces = sorted(n.metadata.name for n in kube.core.list_namespace().items)
        try:
            rc, seconds, text = run_pytest(kc, out / name.split()[0], [*extra, "--experiments", "E00"], name,
                                           timeout=300)
        finally:
            if cordon:
                kube.kubectl("uncordon", worker, what="uncordoning the worker (test bed)")
        lines = text.splitlines()
        message = (next((line.strip() for line in lines if want in line), "") if touch else
                   next((line for line in lines if "ERROR" in line and "--" in line), text.strip()[-300:]))
        res = CaseResult(name, rc, seconds, message)
        if rc == 0 or (touch and rc != 1):
            res.problems.append(f"exit {rc}")
        if want not in text:
            res.problems.append(f"no {want!r} in the output")
        # Nothing created: no namespace that was not there before (test namespaces of the earlier
        # runs may still be terminating and vanish meanwhile; the break case makes its own, as it may).
        new = set(n.metadata.name for n in kube.core.list_namespace().items) - set(namespaces)
        if new and not touch:
            res.problems.append(f"namespaces created: {sorted(new)}")
        results.append(res)
    for _, kc, _, _ in cases:  # the variants (one holds a key the cluster's CA signed)
        if kc != bed.kubeconfig:
            kc.unlink(missing_ok=True)
    return results


# ---------------------------------------------------------------- the check
def check(modes: list[str], xdist: list[int], name: str, keep: bool, cases: bool, artifacts: Path,
          extra: list[str]) -> int:
    workdir = config.CACHE / "byo"
    workdir.mkdir(parents=True, exist_ok=True)
    image = config.node_image_tag()
    report: list[str] = [f"# --byo-kubeconfig against foreign kind clusters ({image})", ""]
    ok = True
    started = time.monotonic()
    for i, mode in enumerate(modes):
        bed = ForeignCluster(f"{name}-{mode}", mode, workdir, image)
        try:
            create_s = bed.create()
            kube = Kube(bed.kubeconfig)
            before = snapshot.take(kube)
            runs = [suite_run(bed, n, artifacts / f"{mode}-n{n}", extra) for n in xdist]
            changed = snapshot.diff(before, snapshot.take(kube))
            still_there = bed.exists()
            results = failure_cases(bed, workdir, artifacts / f"{mode}-failure-cases") if cases and i == 0 else []
        finally:
            if not keep:
                bed.delete()
                bed.kubeconfig.unlink(missing_ok=True)
                bed.config_file.unlink(missing_ok=True)
                engine.HostEngine().remove_guard_if_unused()  # its rules go with the last container of ours
        report += [f"## {mode}", "", f"cluster {bed.name} created in {create_s:.0f}s; "
                   f"kubeconfig {bed.kubeconfig}", "",
                   "| run | exit | passed | skipped | failed | time | problems |", "|---|---|---|---|---|---|---|"]
        for r in runs:
            report.append(f"| {r.label} | {r.rc} | {r.passed} | {r.skipped} | {r.failed} | {r.seconds:.0f}s | "
                          f"{'; '.join(r.problems) or 'none'} |")
            ok &= not r.problems
        reasons = sorted({(t.split('::')[-1], why) for r in runs for t, why in r.skips})
        report += ["", "skips (test: reason):", *(f"- {t}: {why}" for t, why in reasons), ""]
        report.append(f"test bed snapshot of kube-system and nodes ({snapshot.counts(before)}): "
                      + ("unchanged" if not changed else "CHANGED:\n" + "\n".join(f"    {c}" for c in changed)))
        report.append(f"cluster still exists after the runs: {'yes' if still_there else 'NO'}")
        ok &= not changed and still_there
        if results:
            report += ["", "| failure case | exit | time | message | problems |", "|---|---|---|---|---|"]
            for c in results:
                report.append(f"| {c.name} | {c.rc} | {c.seconds:.0f}s | {c.message.replace('|', '/')} | "
                              f"{'; '.join(c.problems) or 'none'} |")
                ok &= not c.problems
        report.append("")
    report.append(f"total {time.monotonic() - started:.0f}s; verdict: {'PASS' if ok else 'FAIL'}")
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "byo-check.md").write_text("\n".join(report) + "\n")
    print("\n".join(report))
    print(f"summary: {artifacts / 'byo-check.md'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=tool_prog("python -m harness.byo"), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="run the suites with --byo-kubeconfig against foreign kind clusters")
    c.add_argument("--proxy-mode", default="iptables,nftables", help="comma-separated modes (default: iptables,nftables)")
    c.add_argument("--xdist", default="0,2", help="pytest-xdist worker counts to run, 0 = serial (default: 0,2)")
    c.add_argument("--cluster-name", "--name", dest="name", default="svc-byo",
                   help="kind cluster name prefix; the mode is appended")
    c.add_argument("--keep-clusters", "--keep", dest="keep", action="store_true",
                   help="keep the foreign clusters afterwards")
    c.add_argument("--no-failure-cases", dest="cases", action="store_false",
                   help="skip the bad-kubeconfig/context/too-few-workers cases")
    c.add_argument("--artifacts-dir", default="artifacts/byo")
    args, extra = parse_with_pytest_args(p, argv)
    modes = [m.strip() for m in args.proxy_mode.split(",") if m.strip()]
    bad = [m for m in modes if m not in config.PROXY_MODES]
    if bad:
        p.error(f"unknown mode(s) {', '.join(bad)}; expected some of {', '.join(config.PROXY_MODES)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    return check(modes, [int(x) for x in args.xdist.split(",")], args.name, args.keep, args.cases,
                 Path(args.artifacts_dir).resolve(), extra)
