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
from .cluster import KindCluster, runner_for
from .kube import Kube
from .lab import ClusterHandle, Images
from .runner import DEFAULT, Runner

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
    missing = engine.ipvs_missing_reason() if mode == "ipvs" else None
    where = engine.choose(mode, opts.ipvs_engine, missing)
    reason = engine.mode_unavailable_reason(mode, opts.ipvs_engine)
    if reason:  # only reached with --skip-unavailable-modes; otherwise the run stopped at configure
        pytest.skip(reason)
    run_dir: Path = pyconfig._svc_run_dir
    name = cluster_name(opts, mode)
    runner, tuning, workers, size_note = DEFAULT, {}, opts.workers, ""
    if where == "guest":
        os.environ.setdefault(config.SLOWDOWN_ENV, str(config.GUEST_SLOWDOWN))  # this worker's waits, see config
        runner = _guest_engine(pyconfig, [node_image, images.demoapp, images.toolbox])
        from .guest import vm
        workers = opts.guest_workers
        tuning = vm.kind_tuning(name, workers)
        if workers + 1 < 3:
            size_note = (f"{workers + 1} node(s), not 3: a kind cluster inside the UML guest is CPU-bound "
                         f"(every syscall is trapped); --guest-workers sets the size. Its control plane is untainted, "
                         f"so pods spread over both nodes")
    state_file = run_dir / f"{name}.json"
    with FileLock(str(run_dir / f"{name}.lock")):
        if state_file.exists():
            state = json.loads(state_file.read_text())
            if state.get("error"):
                pytest.fail(f"cluster {name} could not be created earlier in this run:\n{state['error']}",
                            pytrace=False)
        else:
            kc = KindCluster(name=name, mode=mode, workers=workers, node_image=node_image,
                             reuse=opts.reuse_cluster, keep=True, runner=runner, engine_tuning=tuning,
                             create_timeout=(vm.GUEST_CREATE_TIMEOUT if tuning else config.CLUSTER_CREATE_TIMEOUT),
                             kube_proxy_extra={**(opts.kube_proxy_config or {}),
                                               **breaks.kube_proxy_patch(opts.breaks, mode)},
                             damage=breaks.identity(opts.breaks))
            with open(run_dir / "created", "a") as f:
                f.write(name + "\n")
            try:
                kc.start()
                if not baked:
                    _load_images(name, [images.demoapp, images.toolbox], runner)
                lb = "none"
                if opts.lb_provider == "metallb":
                    from . import loadbalancer
                    lb = loadbalancer.install_metallb(Kube(kc.kubeconfig), mode, runner)
                if kc.created:
                    _apply_cluster_breaks(opts.breaks, mode, name, kc, images)
            except Exception as e:
                state_file.write_text(json.dumps({"error": str(e)}))
                raise
            state = {"kubeconfig": str(kc.kubeconfig), "create_seconds": kc.create_seconds,
                     "node_image": node_image, "lb": lb, "reused": not kc.created,
                     "where": runner.where, "nodes": workers + 1, "size_note": size_note}
            state_file.write_text(json.dumps(state))
    kc = KindCluster(name=name, mode=mode, workers=workers, runner=runner)
    handle = ClusterHandle(mode=mode, name=name, kube=Kube(state["kubeconfig"]), nodes=kc.nodes(),
                           images=images, kind=kc, external_mode=opts.external_client, worker=worker,
                           lb_provider=state.get("lb", "none"), breaks=opts.breaks, runner=runner,
                           engine_note=_engine_note(state), expected_nodes=state.get("nodes", workers + 1))
    return handle


def _engine_note(state: dict) -> str:
    """e.g. "host engine (kernel 6.x), 3 nodes" or "guest ... (UML, 7.2.13), 2 nodes — why"."""
    where = state.get("where", "host")
    if where == "host":
        where = f"host engine (kernel {os.uname().release})"
    note = f"{where}, {state.get('nodes', '?')} nodes"
    return note + (f" — {state['size_note']}" if state.get("size_note") else "")


def _guest_engine(pyconfig: pytest.Config, images: list[str]) -> Runner:
    """Bring up the UML guest engine once per run (any worker may ask first); returns its runner."""
    from .guest.vm import Guest
    run_dir: Path = pyconfig._svc_run_dir
    guest = Guest()
    with FileLock(str(run_dir / "guest.lock")):
        state_file = run_dir / "guest.json"
        if not state_file.exists():
            # Recorded before boot, so the controller halts a half-booted guest too.
            state_file.write_text(json.dumps({"name": guest.cfg.name, "booted": not guest.running()}))
            try:
                guest.up()
                loads = guest.load_images([t for t in dict.fromkeys(images) if _image_exists(t)])
            except Exception as e:
                state_file.write_text(json.dumps({"name": guest.cfg.name, "booted": True, "error": str(e)}))
                raise
            state = json.loads(state_file.read_text())
            state.update({"where": guest.describe(), "loads": loads})
            state_file.write_text(json.dumps(state))
        state = json.loads(state_file.read_text())
        if state.get("error"):
            pytest.fail(f"the guest engine could not be brought up earlier in this run:\n{state['error']}",
                        pytrace=False)
    return guest.runner()


def _halt_guest(pyconfig: pytest.Config, summary: list[str] | None = None) -> None:
    """Controller: shut down the guest this run booted (kept with --keep-cluster)."""
    run_dir: Path = getattr(pyconfig, "_svc_run_dir", None)
    if not run_dir or not (run_dir / "guest.json").exists():
        return
    from .guest.vm import Guest
    state = json.loads((run_dir / "guest.json").read_text())
    guest = Guest()
    if summary is not None and state.get("where"):
        loads = ", ".join(f"{t} {s:.0f}s" for t, s in state.get("loads", {}).items()) or "none needed"
        summary.append(f"svc-harness: guest engine {state['where']}; image loads: {loads}")
    if state.get("booted") and not pyconfig.option.keep_cluster:
        guest.down()


def _apply_cluster_breaks(active, mode: str, name: str, kc: KindCluster, images: Images) -> None:
    """Damage a freshly made cluster on purpose (--break); see harness.breaks."""
    handle = ClusterHandle(mode=mode, name=name, kube=Kube(kc.kubeconfig), nodes=kc.nodes(), images=images,
                           kind=kc, runner=kc.runner)  # the cluster's engine: the guest's for ipvs here
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


def _load_images(name: str, tags: list[str], runner: Runner = DEFAULT) -> None:
    for tag in tags:
        if _image_exists(tag):
            runner.run([config.tool("kind"), "load", "docker-image", tag, "--name", name], timeout=600,
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
        runner = runner_for(name)
        if "create_seconds" in state:
            how = "reused" if state.get("reused") else f"created in {state['create_seconds']:.1f}s"
            size = f"{state.get('nodes')} nodes" + (f" — {state['size_note']}" if state.get("size_note") else "")
            summary.append(f"svc-harness: cluster {name} {how} on the {state.get('where', 'host')} engine, {size} "
                           f"(node image {state['node_image']}, LoadBalancer provider: {state.get('lb')})")
        if failed:
            from . import artifacts
            artifacts.export_kind_logs(artifacts_dir / "kind-logs", name, runner)
        _remove_external_clients(name, runner)
        if opts.keep_cluster:
            if KindCluster(name=name, mode="iptables", runner=runner).exists():  # E16's own cluster is always gone
                summary.append(f"svc-harness: kept cluster {name}; kubeconfig: {state.get('kubeconfig')}")
        else:
            KindCluster(name=name, mode="iptables", runner=runner).delete()
    if run_dir and (run_dir / "guest.json").exists():
        from .guest import vm
        gdrops = vm.guard_drops() - getattr(pyconfig, "_svc_guest_drops_before", 0)
        summary.append(f"svc-harness: guest egress guard dropped {gdrops} packets forwarded from the guest's "
                       f"link during this run (expected 0)")
        _halt_guest(pyconfig, summary)
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
        runner = runner_for(name)
        _remove_external_clients(name, runner)
        if not pyconfig.option.keep_cluster:
            KindCluster(name=name, mode="iptables", runner=runner).delete()
    _halt_guest(pyconfig)


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


def _remove_external_clients(cluster: str, runner: Runner = DEFAULT) -> None:
    ids = runner.run(["docker", "ps", "-aq", "--filter", f"label={config.OWNER_LABEL}=external-client",
                      "--filter", f"name={cluster}-ext"], check=False).stdout.split()
    if ids:
        runner.run(["docker", "rm", "-f", *ids], check=False)


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
    guest = base.runner.where != "host"
    from .guest import vm
    kc = KindCluster(name=name, mode=base.mode, workers=0 if guest else 1, node_image=node_image,
                     runner=base.runner, engine_tuning=vm.kind_tuning(name, 0) if guest else {},
                     create_timeout=vm.GUEST_CREATE_TIMEOUT if guest else config.CLUSTER_CREATE_TIMEOUT)
    try:
        kc.start()
        if not baked:
            _load_images(name, [images.demoapp, images.toolbox], base.runner)
        handle = ClusterHandle(mode=base.mode, name=name, kube=Kube(kc.kubeconfig), nodes=kc.nodes(),
                               images=images, kind=kc, worker=worker, breaks=base.breaks, runner=base.runner)
        lab = Lab(handle, "mode-switch")
        handle.kube.create_namespace(lab.ns)
        from . import modes
        target = modes.other_mode(base.mode)
        yield SwitchBench(handle, lab, target)
        handle.close()
    finally:
        kc.delete()
