"""Deliberate breaks: run the suites against a cluster that is wrong on purpose.

A test that cannot fail proves nothing. Each `Break` here damages one thing
the article's claims rest on (a kube-proxy setting, a Service field, cluster
DNS, the node's routes) and names the experiments that must go red under it:

    pytest suites/ --proxy-mode=iptables --break=sticky-sessions --experiments=E04

`python -m harness.breaks prove` runs every break against its experiments and
fails if any of them still passes (see `prove`). The damage lives only in the
clusters of that run: a cluster made with a cluster-level break is never
reused by a run without it (the break is part of the cluster's identity).
"""
from __future__ import annotations

import argparse
import os
import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from . import config, modes
from .cli import add_kubernetes_version, parse_with_pytest_args, tool_prog, use_kubernetes_version
from .owners import owner_env

if TYPE_CHECKING:
    from .lab import ClusterHandle, Lab

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Break:
    name: str
    fault: str                     # what is wrong, in words (logged, and put in the report)
    must_fail: tuple[str, ...]     # experiments that must go red under it
    kube_proxy: Callable[[str], dict] | None = None          # mode -> KubeProxyConfiguration patch
    on_cluster: Callable[["ClusterHandle"], None] | None = None  # once, after the cluster is up
    on_namespace: Callable[["Lab"], None] | None = None          # in every test namespace
    on_service: Callable[["Lab", dict], dict] | None = None      # rewrites each Service spec applied
    on_patch: Callable[["Lab", dict], dict] | None = None        # rewrites each Service spec patch
    skip_restart: bool = False     # a mode change edits the ConfigMap but restarts nothing
    # Only with --byo-kubeconfig: what must go red is the run's "left as found" snapshot check (exit 1),
    # not an experiment; proven by `python -m harness.byo check`, not by `prove`.
    byo: bool = False
    scheduler_unapplied: bool = False  # an ipvs scheduler change edits the ConfigMap but restarts nothing
    modes: tuple[str, ...] = config.PROXY_MODES  # the modes whose claims it breaks (`prove` runs only those)
    from_minor: tuple[int, int] = (0, 0)  # the first Kubernetes release where its claim holds (`prove` skips older)

    @property
    def changes_cluster(self) -> bool:
        return bool(self.kube_proxy or self.on_cluster)


# ---------------------------------------------------------------- the damage
def _open_engine_api(lab: "Lab") -> None:
    """The engine's API open to its clusters, as it was before TLS: a socat in the engine's own
    network namespace forwards plain TCP on 2375 at the kind network's gateway to dockerd's socket.
    Named like an external client, so the run's end removes it with them."""
    from .engine import kind_gateway, remove_container
    c = lab.cluster
    gw = kind_gateway(c.runner)
    name = f"{c.name}-ext-engine-api-{c.worker}"
    remove_container(c.runner, name)
    c.runner.engine("open the engine's API on purpose", lambda d: d.containers.run(
        c.kind.node_image or config.node_image_tag(),
        [f"TCP-LISTEN:2375,bind={gw},fork,reuseaddr", "UNIX-CONNECT:/run/docker.sock"], entrypoint="socat",
        name=name, detach=True, network_mode="host", volumes=["/run/docker.sock:/run/docker.sock"],
        labels={config.OWNER_LABEL: "external-client"}))


def _stray_backend(lab: "Lab") -> None:
    """A bare pod that carries the demo app's label: the Service selects it too."""
    from .kube import load_manifest
    lab.kube.apply(load_manifest("stray-backend", IMAGE=lab.cluster.images.demoapp), lab.ns)
    lab.kube.wait_pod_ready("stray-backend", lab.ns)


def _dns_down(cluster: "ClusterHandle") -> None:
    from .waits import Wait
    cluster.kube.kubectl("-n", "kube-system", "scale", "deployment", "coredns", "--replicas=0")
    # Terminating CoreDNS pods keep answering (lameduck) and kube-proxy still sends to terminating
    # endpoints when no ready one is left: wait until the slices list none at all (seen: a dig 4 s
    # after the scale-down was still answered).
    Wait("kube-dns EndpointSlices to list no endpoint, terminating ones included").until(
        lambda: cluster.kube.endpoint_slices("kube-dns", "kube-system", ready_only=False), lambda eps: not eps)


def _service_range_local(cluster: "ClusterHandle") -> None:
    """Make every ClusterIP a local address of each node, as ipvs's kube-ipvs0 device does."""
    for node in cluster.node_peers():
        for cidr in cluster.service_cidrs():
            node.exec(["ip", "route", "replace", "local", str(cidr), "dev", "lo", "table", "local"])


def _touch_kube_system(lab: "Lab") -> None:
    """What E17 used to do to a --byo-kubeconfig cluster: edit the kube-proxy ConfigMap (harmlessly)."""
    lab.kube.kubectl("-n", "kube-system", "annotate", "--overwrite", "configmap", "kube-proxy",
                     f"svc-harness/touched-by={lab.ns}", what="touching kube-system on purpose")


def _leak_namespace(lab: "Lab") -> None:
    """A test namespace of ours that nothing deletes (what a lost teardown leaves)."""
    lab.cluster.kube.create_namespace(f"{lab.ns}-leaked"[:63])


def _touch_cluster_role(lab: "Lab") -> None:
    """Edit a cluster-scoped object (harmlessly): the built-in `view` ClusterRole."""
    lab.kube.kubectl("annotate", "--overwrite", "clusterrole", "view", f"svc-harness/touched-by={lab.ns}",
                     what="touching a ClusterRole on purpose")


def _empty_kube_ipvs0(cluster: "ClusterHandle") -> None:
    """Keep kube-ipvs0 without addresses on every node.

    kube-proxy binds each Service IP to kube-ipvs0 at every sync, so removing
    them once would be undone; a loop on each node keeps removing them.
    """
    for node in cluster.node_peers():
        cluster.runner.run(["docker", "exec", "-d", node.container, "sh", "-c",
                            "while :; do ip addr flush dev kube-ipvs0 2>/dev/null; sleep 0.5; done"],
                           what=f"emptying kube-ipvs0 on {node.name}")


def _every_node_holds_external_ips(lab: "Lab", spec: dict) -> dict:
    if spec.get("externalIPs"):
        spec["externalIPs"] = spec["externalIPs"] + [n.ip for n in lab.cluster.nodes]
    return spec


def _sticky(lab: "Lab", spec: dict) -> dict:
    if spec.get("type") != "ExternalName":
        spec["sessionAffinity"] = "ClientIP"
    return spec


LOST_FIELDS = ("externalTrafficPolicy", "internalTrafficPolicy", "sessionAffinity", "loadBalancerSourceRanges")


def _lose_policy_fields(lab: "Lab", spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k not in LOST_FIELDS}


BREAKS = {b.name: b for b in [
    Break("masquerade-all", "kube-proxy SNATs all Service traffic (iptables/nftables masqueradeAll: true)",
          ("E02",), kube_proxy=lambda mode: {"iptables": {"masqueradeAll": True},
                                              "nftables": {"masqueradeAll": True}}),
    Break("wrong-mode", "kube-proxy is configured for another proxy mode than the run asks for",
          ("E00", "E14"), kube_proxy=lambda mode: {"mode": modes.other_mode(mode)}),
    Break("nodeports-on-loopback", "kube-proxy opens node ports only on 127.0.0.0/8 (nodePortAddresses)",
          ("E06", "E07", "E10"), kube_proxy=lambda mode: {"nodePortAddresses": ["127.0.0.0/8"]}),
    Break("stray-backend", "a bare pod with the demo app's label sits in every test namespace",
          ("E01", "E02", "E03"), on_namespace=_stray_backend),
    Break("sticky-sessions", "every Service is pinned to sessionAffinity: ClientIP",
          ("E04", "E05"), on_service=_sticky, on_patch=_sticky),
    Break("policy-patches-lost", "patches to traffic policies, affinity and source ranges never reach the "
          "Service", ("E05", "E08", "E09", "E11"), on_patch=_lose_policy_fields),
    Break("dns-down", "cluster DNS is down (CoreDNS scaled to 0)", ("E00", "E12"), on_cluster=_dns_down),
    # ipvs only, where it runs in the UML guest here: on a host engine this would open the host's
    # own Docker API to the kind network for the length of the run.
    Break("engine-api-open", "the Docker engine running the nodes serves its API unauthenticated on its kind "
          "network gateway (port 2375), as the guest engine did before TLS", ("E18",),
          on_namespace=_open_engine_api, modes=("ipvs",)),
    # Not in ipvs: there a node's own address as an external IP sits on every node's kube-ipvs0, and
    # the nodes lose each other (see E13), so the cluster would be damaged, not one claim.
    Break("external-ips-everywhere", "a Service's externalIPs list every node's own IP besides its one address",
          ("E13",), on_service=_every_node_holds_external_ips, modes=("iptables", "nftables")),
    Break("service-range-local", "the Service range is a local address range on every node (like kube-ipvs0)",
          ("E15",), on_cluster=_service_range_local, modes=("iptables", "nftables")),
    Break("kube-ipvs0-empty", "kube-ipvs0 holds no Service address on any node (removed as fast as kube-proxy "
          "adds them)", ("E04", "E15"), on_cluster=_empty_kube_ipvs0, modes=("ipvs",)),
    Break("ipvs-arp-not-strict", "kube-proxy in ipvs leaves strictARP off, so every node answers ARP for the "
          "addresses on its kube-ipvs0", ("E11",), kube_proxy=lambda mode: {"ipvs": {"strictARP": False}},
          modes=("ipvs",)),
    Break("ipvs-scheduler-unapplied", "an ipvs scheduler change edits the kube-proxy ConfigMap but no kube-proxy "
          "restarts to apply it", ("E17",), scheduler_unapplied=True, modes=("ipvs",)),
    Break("ipvs-migrated-away", "a cluster made for ipvs whose kube-proxy already runs iptables (a migration "
          "done behind the run's back)", ("E19",), kube_proxy=lambda mode: {"mode": "iptables"}, modes=("ipvs",),
          from_minor=(1, 35)),
    Break("mode-restart-skipped", "a mode change edits the kube-proxy ConfigMap but restarts no kube-proxy pod",
          ("E16",), skip_restart=True),
    Break("kube-system-touched", "every test namespace's setup also annotates the kube-proxy ConfigMap in "
          "kube-system (a change outside the test namespaces)", (), on_namespace=_touch_kube_system, byo=True),
    Break("namespace-leaked", "every test namespace's setup also creates a test namespace that nothing deletes",
          (), on_namespace=_leak_namespace, byo=True),
    Break("clusterrole-touched", "every test namespace's setup also annotates the built-in `view` ClusterRole "
          "(a cluster-scoped change)", (), on_namespace=_touch_cluster_role, byo=True),
]}


def parse(values: list[str] | None) -> tuple[Break, ...]:
    """'--break a,b --break c' -> the Break objects, validated, order kept."""
    out: list[Break] = []
    for value in values or []:
        for name in filter(None, (v.strip() for v in value.split(","))):
            if name not in BREAKS:
                raise ValueError(f"--break={name}: unknown break; expected one of {', '.join(BREAKS)}")
            if BREAKS[name] not in out:
                out.append(BREAKS[name])
    return tuple(out)


def kube_proxy_patch(breaks: tuple[Break, ...], mode: str) -> dict:
    patch: dict = {}
    for b in breaks:
        if b.kube_proxy:
            patch.update(b.kube_proxy(mode))
    return patch


def identity(breaks: tuple[Break, ...]) -> str:
    """What a cluster made under these breaks differs by (empty for a healthy cluster)."""
    return ",".join(b.name for b in breaks if b.changes_cluster)


def describe(breaks: tuple[Break, ...]) -> str:
    return "; ".join(f"{b.name}: {b.fault}" for b in breaks)


# ---------------------------------------------------------------- proving that tests fail
def _pytest_argv(b: Break, mode: str, artifacts: Path, extra: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "pytest", str(config.REPO / "suites"), "-p", "no:cacheprovider", "-q",
            f"--proxy-mode={mode}", f"--break={b.name}", f"--experiments={','.join(b.must_fail)}",
            f"--artifacts-dir={artifacts}", f"--cluster-prefix={_cluster_prefix(b)}"]
    if not b.changes_cluster:
        # A healthy cluster serves every break that damages only namespaces or Services.
        argv += ["--reuse-clusters", "--keep-clusters"]
    return argv + extra


def _cluster_prefix(b: Break) -> str:
    """One kept cluster for all Service/namespace-level breaks; one of its own per cluster-level break
    (so those can run side by side with --jobs)."""
    return f"svc-brk-{b.name}"[:config.CLUSTER_PREFIX_MAX].rstrip("-") if b.changes_cluster else SHARED_PREFIX


SHARED_PREFIX = "svc-breaks"


def _verdicts(evs, mode: str) -> dict[str, str]:
    """Experiment -> "fail" if any of its cases failed in the test itself, else what was seen.

    A failure while setting up (no cluster, say) is "setup error": it proves nothing about the test."""
    out: dict[str, str] = {}
    for ev in evs:
        if ev.mode != mode:
            continue
        seen = "setup error" if ev.verdict == "fail" and ev.phase != "call" else ev.verdict
        if out.get(ev.experiment) != "fail":
            out[ev.experiment] = seen
    return out


class Children:
    """The pytest runs `prove` has started. A SIGTERM or SIGHUP to `prove` goes on to each of them
    (each then deletes its clusters, as a run does) and no new one starts after it."""

    def __init__(self):
        self.running: set[subprocess.Popen] = set()
        self.stopped_by = 0   # the signal that stopped prove, if one did
        self._lock = threading.Lock()

    def run(self, argv: list[str], **kw) -> int:
        with self._lock:
            if self.stopped_by:
                return 128 + self.stopped_by
            child = subprocess.Popen(argv, **kw)
            self.running.add(child)
        try:
            return child.wait()
        finally:
            with self._lock:
                self.running.discard(child)

    def stop(self, signum: int, _frame=None) -> None:
        """Signal handler (the main thread only waits on the lanes, so never holds the lock)."""
        with self._lock:
            self.stopped_by = signum
            for child in self.running:
                child.send_signal(signum)


def _run_break(b: Break, mode: str, artifacts: Path, extra: list[str], quiet: bool,
               slot: tuple[int, int] = (0, 1), children: Children | None = None) -> tuple[int, float]:
    """One pytest run with break `b` on its experiments: (exit code, seconds). With `quiet` its
    output goes to <artifacts>/<break>/pytest.log (runs side by side would interleave). `slot`:
    (guest, guests) for a guest cluster, so lanes side by side use a guest each."""
    out = artifacts / b.name
    log.info("break %s (%s): expecting %s to fail", b.name, b.fault, ", ".join(b.must_fail))
    started = time.monotonic()
    argv = _pytest_argv(b, mode, out, extra) + [f"--guests={slot[1]}", f"--guest-slot={slot[0]}"]
    env = {**os.environ, **owner_env()}  # the kept clusters between runs are prove's own
    children = children or Children()
    if quiet:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "pytest.log", "w") as f:
            rc = children.run(argv, cwd=config.REPO, stdout=f, stderr=subprocess.STDOUT, env=env)
    else:
        rc = children.run(argv, cwd=config.REPO, env=env)
    took = time.monotonic() - started
    log.info("break %s: pytest exit %d in %.0fs%s", b.name, rc, took, f" (log: {out / 'pytest.log'})" if quiet else "")
    return rc, took


def prove(mode: str, names: list[str], artifacts: Path, extra: list[str], jobs: int = 1,
          one_each: bool = False) -> int:
    """Run each break against its experiments; every one of them must fail. Returns an exit code.

    Breaks that damage only namespaces or Services run one after another on one kept cluster (a
    lane); each cluster-level break makes its own cluster and is a lane of its own. `jobs` lanes run
    at once."""
    from concurrent.futures import ThreadPoolExecutor
    from queue import Queue

    from . import engine

    from . import report
    from .cluster import KindCluster
    # one_each: the small size CI runs (every break and every kind of damage, first experiment only).
    ordered = [replace(BREAKS[n], must_fail=BREAKS[n].must_fail[:1]) if one_each else BREAKS[n]
               for n in names]
    shared = [b for b in ordered if not b.changes_cluster]
    lanes = ([shared] if shared else []) + [[b] for b in ordered if b.changes_cluster]
    rows, missed = [], []
    jobs = max(1, jobs)
    guests = min(jobs, os.cpu_count() or 1)  # a guest runs one CPU (as --guests=auto decides)
    slots: Queue[int] = Queue()
    for i in range(jobs):
        slots.put(i)

    children = Children()

    kept_on = []  # the engines the kept clusters were on (their markers go with them)

    def delete_shared(last: bool = False) -> None:
        for slot in range(guests):  # on the engine its marker names
            kept = KindCluster.ours(f"{SHARED_PREFIX}-{mode}{engine.cluster_suffix(slot)}")
            kept_on.append(kept.engine)
            kept.delete()
        if last:  # the kept clusters' runs left their guests up for them (--keep-clusters)
            for eng in kept_on:
                eng.halt_if_idle()

    def run_lane(lane: list[Break]) -> list[tuple]:
        slot = slots.get()  # a lane keeps its guest (its kept cluster is there) until it is done
        try:
            return [(b, *_run_break(b, mode, artifacts, extra, jobs > 1, (slot % guests, guests), children))
                    for b in lane]
        finally:
            if lane is shared:
                # Its kept cluster is done with: gone before the next lane builds one on this guest
                # (two clusters in one guest starve each other's kubeadm init).
                delete_shared()
            slots.put(slot)

    before = {sig: signal.signal(sig, children.stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = [r for lane in pool.map(run_lane, lanes) for r in lane]
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        delete_shared(last=True)  # again, for a run stopped before the shared lane ended
    if children.stopped_by:
        print(f"stopped by signal {children.stopped_by}: the running breaks were stopped and their "
              f"clusters deleted; no table written", file=sys.stderr)
        return 128 + children.stopped_by
    for b, rc, took in results:
        verdicts = _verdicts(report.load(artifacts / b.name), mode)
        for exp in b.must_fail:
            seen = verdicts.get(exp, "not run")
            ok = seen == "fail"
            if not ok:
                missed.append(f"{b.name} -> {exp}: {seen}")
            rows.append(f"| {b.name} | {b.fault} | {exp} | {seen.upper()} | {'yes' if ok else 'NO'} | "
                        f"{took:.0f}s |")
    table = ["| break | fault | experiment | verdict | red as it must be | run time |",
             "|---|---|---|---|---|---|", *rows]
    summary = artifacts / f"breaks-{mode}.md"
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(f"# Deliberate breaks, {mode} mode\n\n" + "\n".join(table) + "\n", encoding="utf-8")
    print("\n".join(table))
    print(f"summary: {summary}")
    if missed:
        print("these experiments did NOT fail under their break (the test cannot see the fault):\n  "
              + "\n  ".join(missed), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=tool_prog("python -m harness.breaks"), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the breaks and the experiments each must turn red")
    pr = sub.add_parser("prove", help="run each break; exit non-zero if one of its experiments passes")
    pr.add_argument("--proxy-mode", default="iptables", choices=config.PROXY_MODES)
    pr.add_argument("--only", default="", help="comma-separated break names (default: all)")
    pr.add_argument("--artifacts-dir", default="artifacts/breaks")
    pr.add_argument("--jobs", type=int, default=1,
                    help="lanes side by side: the shared-cluster breaks are one lane, each cluster-level break "
                         "another (default: 1; CI uses 2)")
    pr.add_argument("--one-each", action="store_true",
                    help="each break against only the first experiment it must turn red (what CI runs; "
                         "the full proof is without it)")
    add_kubernetes_version(pr)
    args, extra = parse_with_pytest_args(p, argv)
    if args.cmd == "list":
        for b in BREAKS.values():
            only = "" if b.modes == config.PROXY_MODES else f" [{'/'.join(b.modes)} only]"
            print(f"{b.name:24} {', '.join(b.must_fail):18} {b.fault}{only}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    use_kubernetes_version(p, args.kubernetes_version)
    release = config.versions()["KUBERNETES_VERSION"]
    minor = config.minor_of(release)
    names = [n for n in args.only.split(",") if n] or [n for n, b in BREAKS.items()
                                                        if not b.byo and args.proxy_mode in b.modes]
    too_new = [n for n in names if n in BREAKS and BREAKS[n].from_minor > minor]
    for n in too_new:
        print(f"break {n}: not run on Kubernetes {release}; its claim holds from "
              f"{'.'.join(map(str, BREAKS[n].from_minor))} on (--kubernetes-version)", file=sys.stderr)
    names = [n for n in names if n not in too_new]
    if not names:
        p.error(f"no break left to prove on Kubernetes {release}")
    unknown = [n for n in names if n not in BREAKS]
    if unknown:
        p.error(f"unknown break(s) {', '.join(unknown)}; expected some of {', '.join(BREAKS)}")
    byo = [n for n in names if BREAKS[n].byo]
    if byo:
        p.error(f"{', '.join(byo)}: proven against a --byo-kubeconfig cluster by `python -m harness.byo check`")
    return prove(args.proxy_mode, names, Path(args.artifacts_dir).resolve(), extra, args.jobs, args.one_each)


if __name__ == "__main__":
    sys.exit(main())
