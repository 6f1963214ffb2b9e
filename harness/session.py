"""Per-run cluster sharing: one cluster per mode, created once, deleted once.

The run directory (CACHE/runs/<id>) is shared by the controller and every
xdist worker. Under a file lock per cluster, the first worker that needs a
mode creates the cluster and writes its state; the others read it. Names of
clusters this run created are appended to `created` *before* creation starts,
so the controller can delete even a half-made cluster after Ctrl-C.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from filelock import FileLock

from . import breaks, config, engine
from .cluster import KindCluster
from .kube import Kube
from .lab import ClusterHandle, Images
from .runner import DEFAULT

log = logging.getLogger(__name__)


def cluster_name(opts, mode: str) -> str:
    return f"{opts.cluster_name}-{mode}"


def _image_exists(tag: str) -> bool:
    return DEFAULT.run(["docker", "image", "inspect", tag], check=False, timeout=30).ok


def resolve_images(opts) -> tuple[str, Images, bool]:
    """(node image, workload images, whether the node image already holds them)."""
    v = config.versions()
    ours = config.node_image_tag()
    node_image = opts.node_image or (ours if _image_exists(ours) else v["UPSTREAM_NODE_IMAGE"])
    t = v["HARNESS_TAG"]
    images = Images(demoapp=opts.demo_image or f"svc-harness/demoapp:{t}", toolbox=f"svc-harness/toolbox:{t}")
    return node_image, images, node_image == ours


def acquire(pyconfig: pytest.Config, mode: str) -> ClusterHandle:
    opts = pyconfig.option
    node_image, images, baked = resolve_images(opts)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    if opts.kubeconfig:
        return _existing(pyconfig, images, worker)
    reason = engine.mode_unavailable_reason(mode)
    if reason:  # only reached with --skip-unavailable-modes; otherwise the run stopped at configure
        pytest.skip(reason)
    run_dir: Path = pyconfig._svc_run_dir
    name = cluster_name(opts, mode)
    state_file = run_dir / f"{name}.json"
    with FileLock(str(run_dir / f"{name}.lock")):
        if state_file.exists():
            state = json.loads(state_file.read_text())
            if state.get("error"):
                pytest.fail(f"cluster {name} could not be created earlier in this run:\n{state['error']}",
                            pytrace=False)
        else:
            kc = KindCluster(name=name, mode=mode, workers=opts.workers, node_image=node_image,
                             reuse=opts.reuse_cluster, keep=True,
                             kube_proxy_extra={**(opts.kube_proxy_config or {}),
                                               **breaks.kube_proxy_patch(opts.breaks, mode)},
                             damage=breaks.identity(opts.breaks))
            with open(run_dir / "created", "a") as f:
                f.write(name + "\n")
            try:
                kc.start()
                if not baked:
                    _load_images(name, [images.demoapp, images.toolbox])
                lb = "none"
                if opts.lb_provider == "metallb":
                    from . import loadbalancer
                    lb = loadbalancer.install_metallb(Kube(kc.kubeconfig), mode)
                if kc.created:
                    _apply_cluster_breaks(opts.breaks, mode, name, kc, images)
            except Exception as e:
                state_file.write_text(json.dumps({"error": str(e)}))
                raise
            state = {"kubeconfig": str(kc.kubeconfig), "create_seconds": kc.create_seconds,
                     "node_image": node_image, "lb": lb, "reused": not kc.created}
            state_file.write_text(json.dumps(state))
    kc = KindCluster(name=name, mode=mode, workers=opts.workers)
    handle = ClusterHandle(mode=mode, name=name, kube=Kube(state["kubeconfig"]), nodes=kc.nodes(),
                           images=images, kind=kc, external_mode=opts.external_client, worker=worker,
                           lb_provider=state.get("lb", "none"), breaks=opts.breaks)
    return handle


def _apply_cluster_breaks(active, mode: str, name: str, kc: KindCluster, images: Images) -> None:
    """Damage a freshly made cluster on purpose (--break); see harness.breaks."""
    handle = ClusterHandle(mode=mode, name=name, kube=Kube(kc.kubeconfig), nodes=kc.nodes(), images=images,
                           kind=kc)
    for b in active:
        if b.on_cluster:
            log.warning("breaking cluster %s on purpose: %s", name, b.fault)
            b.on_cluster(handle)


def _existing(pyconfig: pytest.Config, images: Images, worker: str) -> ClusterHandle:
    """--kubeconfig: a cluster we did not make; never changed beyond test namespaces.

    The controller's preflight found the mode and nodes; the first worker here discovers the rest
    (harness.byo.discover) once for the run, behind the run's lock."""
    from .byo import discover
    from .cluster import Node
    opts = pyconfig.option
    run_dir: Path = pyconfig._svc_run_dir
    pre = pyconfig._svc_byo
    kube = Kube(opts.kubeconfig, context=opts.context)
    state_file = run_dir / "byo-discovery.json"
    with FileLock(str(run_dir / "byo.lock")):
        if state_file.exists():
            state = json.loads(state_file.read_text())
            if state.get("error"):
                pytest.fail(f"discovering the --kubeconfig cluster failed earlier in this run:\n{state['error']}",
                            pytrace=False)
            disc = discover.Discovery(**state)
        else:
            try:
                disc = discover.discover(kube, pre, namespace=f"svc-discovery-{run_dir.name}",
                                         node_access=opts.node_access, external=opts.external_client)
                if disc.node_access == "docker":  # local kind nodes: the same guard as our own clusters
                    engine.ensure_egress_guard()
            except Exception as e:
                state_file.write_text(json.dumps({"error": str(e)}))
                raise
            state_file.write_text(disc.to_json())
            for line in disc.notes:
                log.info("--kubeconfig cluster: %s", line)
    # Cordoned, tainted or NotReady workers stay allowed traffic targets but get no test pods.
    nodes = [Node(n.name, n.ip, n.role if (n.schedulable or n.role == "control-plane") else "unschedulable")
             for n in pre.nodes]
    return ClusterHandle(mode=pre.mode, name=byo_prefix(run_dir), kube=kube, nodes=nodes, images=images, kind=None,
                         external_mode=disc.external, worker=worker, lb_provider=disc.lb_provider,
                         node_access=disc.node_access, networks=disc.networks,
                         allow_changes=opts.allow_cluster_changes, changes_log=run_dir / "byo-changes",
                         breaks=opts.breaks)


def byo_prefix(run_dir: Path) -> str:
    """Names of the containers a --kubeconfig run starts on this machine (external clients, sidecars)."""
    return f"svc-byo-{run_dir.name}"


def finish_byo(pyconfig: pytest.Config) -> tuple[list[str], bool]:
    """Controller, --kubeconfig: remove our containers, compare the cluster with the snapshot taken
    before the run, and summarise. (lines, True if the cluster changed outside test namespaces
    without consent). Runs before finish_run, which removes the run directory."""
    from .byo import snapshot
    opts = pyconfig.option
    run_dir: Path = pyconfig._svc_run_dir
    summary: list[str] = []
    ids = DEFAULT.run(["docker", "ps", "-aq", "--filter", f"label={config.OWNER_LABEL}",
                       "--filter", f"name={byo_prefix(run_dir)}-"], check=False).stdout.split()
    if ids:
        DEFAULT.run(["docker", "rm", "-f", *ids], check=False)
    pre = pyconfig._svc_byo
    state_file = run_dir / "byo-discovery.json"
    disc = json.loads(state_file.read_text()) if state_file.exists() else {}
    summary.append(f"svc-harness: --kubeconfig cluster at {pre.server}: kube-proxy {pre.mode} "
                      f"({'; '.join(f'{k}: {v}' for k, v in pre.mode_sources.items())})")
    if disc and "error" not in disc:
        summary.append(f"svc-harness: discovered: node access {disc['node_access']}, external client "
                          f"{disc['external']}, LoadBalancer: {disc['lb_detail']}; traffic allowed to "
                          f"{', '.join(disc['networks'])}")
    changes_file = run_dir / "byo-changes"
    consented = changes_file.read_text().splitlines() if changes_file.exists() else []
    for change in dict.fromkeys(consented):
        summary.append(f"svc-harness: changed with --allow-cluster-changes (undone afterwards): {change}")
    before = getattr(pyconfig, "_svc_byo_before", None)
    try:
        after = snapshot.take(Kube(opts.kubeconfig, context=opts.context))
    except Exception as e:  # noqa: BLE001 - an unreadable cluster at the end is itself a failure
        summary.append(f"svc-harness: FAILED to take the after-run snapshot of the --kubeconfig cluster: {e}")
        return summary, True
    changed = snapshot.diff(before, after)
    out = Path(opts.artifacts_dir) / "byo-snapshot.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"before": before, "after": after, "diff": changed}, indent=1))
    if disc.get("node_access") == "docker":
        drops = engine.egress_drops() - getattr(pyconfig, "_svc_drops_before", (0, 0))[0]
        summary.append(f"svc-harness: egress guard dropped {drops} packets during this run (expected 0)")
    if not changed:
        summary.append(f"svc-harness: --kubeconfig cluster left as found: kube-system and nodes unchanged "
                       f"({snapshot.counts(after)} compared; {out})")
        return summary, False
    verdict = "expected: changes were allowed" if consented else "the run FAILS: it must leave the cluster as found"
    summary.append(f"svc-harness: --kubeconfig cluster CHANGED outside test namespaces ({len(changed)} differences; "
                   f"{verdict}); {out}:")
    summary += [f"    {line}" for line in changed]
    return summary, not consented


def _load_images(name: str, tags: list[str]) -> None:
    for tag in tags:
        if _image_exists(tag):
            DEFAULT.run([config.tool("kind"), "load", "docker-image", tag, "--name", name], timeout=600,
                        what=f"loading {tag} into {name}")


def finish_run(pyconfig: pytest.Config, failed: bool, gate=None) -> None:
    """Controller only: export logs on failure, delete what this run created, write the report."""
    opts = pyconfig.option
    run_dir: Path = getattr(pyconfig, "_svc_run_dir", None)
    summary: list[str] = []
    artifacts_dir = Path(opts.artifacts_dir)
    created = []
    if run_dir and (run_dir / "created").exists():
        created = list(dict.fromkeys((run_dir / "created").read_text().split()))
    for name in created:
        state_file = run_dir / f"{name}.json"
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        if "create_seconds" in state:
            how = "reused" if state.get("reused") else f"created in {state['create_seconds']:.1f}s"
            summary.append(f"svc-harness: cluster {name} {how} (node image {state['node_image']}, "
                           f"LoadBalancer provider: {state.get('lb')})")
        if failed:
            from . import artifacts
            artifacts.export_kind_logs(artifacts_dir / "kind-logs", name)
        _remove_external_clients(name)
        if opts.keep_cluster:
            if KindCluster(name=name, mode="iptables").exists():  # E16's own cluster is always gone
                summary.append(f"svc-harness: kept cluster {name}; kubeconfig: {state.get('kubeconfig')}")
        else:
            KindCluster(name=name, mode="iptables").delete()
    if created:
        drops = engine.egress_drops() - getattr(pyconfig, "_svc_drops_before", (0, 0))[0]
        dns = engine.egress_drops(comment=engine.DNS_COMMENT) - getattr(pyconfig, "_svc_drops_before", (0, 0))[1]
        summary.append(f"svc-harness: egress guard dropped {drops} packets during this run (expected 0); "
                       f"{dns} DNS lookups from the kind network to outside resolvers were rejected")
    from . import report
    if list(artifacts_dir.glob("evidence-*.jsonl")) or list(artifacts_dir.glob("upstream-*.jsonl")) \
            or (gate is not None and gate.verdicts()):
        md, js = report.write_report(artifacts_dir, gate)
        summary.append(f"svc-harness: report {md} (+ {js.name})")
    started = getattr(pyconfig, "_svc_started", None)
    if started:
        summary.append(f"svc-harness: run time {time.monotonic() - started:.0f}s "
                       f"(modes: {', '.join(opts.proxy_modes)})")
    pyconfig._svc_summary = summary
    if run_dir:
        shutil.rmtree(run_dir, ignore_errors=True)


def abort_run(pyconfig: pytest.Config) -> None:
    """SIGTERM path: end our child processes (workers, kind), then delete what this run created."""
    for pid in _descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _descendants(os.getpid()):
        time.sleep(0.2)
    run_dir: Path = getattr(pyconfig, "_svc_run_dir", None)
    if not run_dir or not (run_dir / "created").exists():
        return
    for name in dict.fromkeys((run_dir / "created").read_text().split()):
        _remove_external_clients(name)
        if not pyconfig.option.keep_cluster:
            KindCluster(name=name, mode="iptables").delete()


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid` (from /proc; no extra dependency)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z":  # a killed worker stays a zombie until we (busy here) reap it
                children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _remove_external_clients(cluster: str) -> None:
    ids = DEFAULT.run(["docker", "ps", "-aq", "--filter", f"label={config.OWNER_LABEL}=external-client",
                       "--filter", f"name={cluster}-ext"], check=False).stdout.split()
    if ids:
        DEFAULT.run(["docker", "rm", "-f", *ids], check=False)


class SwitchBench:
    """A small cluster of its own for the mode-change experiment (it changes kube-proxy for everyone)."""

    def __init__(self, cluster: ClusterHandle, lab, target_mode: str):
        self.cluster, self.lab, self.target_mode = cluster, lab, target_mode

    def change_mode(self, mode: str):
        """Yields each restart step once the restarted kube-proxy runs `mode` and is in sync."""
        from . import modes
        from .waits import Wait
        restart = not any(b.skip_restart for b in self.cluster.breaks)
        for node_name, step in modes.change_mode(self.cluster.kube, mode, restart=restart):
            node = self.cluster.node(node_name)
            Wait(f"kube-proxy on {node_name} to run {mode} and report healthy").until(
                lambda: (modes.endpoint_mode(node), modes.healthz(node)), lambda s: s == (mode, "200"))
            yield step
        self.cluster.mode = self.lab.mode = mode


@contextlib.contextmanager
def switch_cluster(pyconfig: pytest.Config, base: ClusterHandle):
    from .lab import Lab
    opts = pyconfig.option
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"{cluster_name(opts, base.mode)}-switch-{worker}"[:50]
    node_image, images, baked = resolve_images(opts)
    with open(pyconfig._svc_run_dir / "created", "a") as f:  # so an interrupted run still deletes it
        f.write(name + "\n")
    kc = KindCluster(name=name, mode=base.mode, workers=1, node_image=node_image)
    try:
        kc.start()
        if not baked:
            _load_images(name, [images.demoapp, images.toolbox])
        handle = ClusterHandle(mode=base.mode, name=name, kube=Kube(kc.kubeconfig), nodes=kc.nodes(),
                               images=images, kind=kc, worker=worker, breaks=base.breaks)
        lab = Lab(handle, "mode-switch")
        handle.kube.create_namespace(lab.ns)
        from . import modes
        target = modes.other_mode(base.mode)
        yield SwitchBench(handle, lab, target)
        handle.close()
    finally:
        kc.delete()
