"""kind cluster lifecycle: render config, create (with retries), reuse, delete.

    with KindCluster("svc-harness-iptables", mode="iptables") as c:
        c.kubeconfig   # a file of our own; ~/.kube/config is never written

Ownership: a cluster counts as ours only if the harness left a marker file
for it (CACHE/clusters/<name>.json) when it created it. A cluster of that name
without a marker belongs to someone else and is never deleted or changed. The
marker names the owner (a run's controller, harness.owners) and the engine the
cluster runs on: a live owner's cluster is never deleted or reused by another
run (`claim_name` gives that run another name), a dead owner's may be.
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from filelock import FileLock

from . import config
from . import engine as engines
from .kube import Kube
from .owners import Owner, read_json, write_json, write_text
from .runner import DEFAULT, CommandError, Runner, Step

log = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    pass


@dataclass
class Node:
    """A cluster node as the host sees it: a container on the kind network."""
    name: str          # container name == Kubernetes node name
    ip: str            # address on the kind network
    role: str          # control-plane | worker

    def describe(self) -> str:
        return f"node {self.name} ({self.ip})"


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def check_kind_version(runner: Runner) -> None:
    """kind must be at least the pinned KIND_VERSION: an older one writes a kubeadm config newer
    releases refuse (kubeadm 1.37 reads only v1beta4, which kind writes from v0.32.0 on)."""
    want = config.versions()["KIND_VERSION"]
    res = runner.run([config.tool("kind"), "version"], check=False, timeout=30)
    seen = res.stdout.split()[1] if res.ok and len(res.stdout.split()) > 1 else ""
    if not seen or _version_tuple(seen) < _version_tuple(want):
        raise ClusterError(f"kind {want} or newer is needed (images/versions.env); {config.tool('kind')} "
                           f"says {(res.stdout or res.stderr).strip()[:200]!r}: run scripts/setup, or "
                           f"`go install sigs.k8s.io/kind@{want}`")


def kubelet_settings(kubernetes: str, cgroup_version: int) -> dict:
    """KubeletConfiguration fields a release needs on an engine: kubelet >= 1.35 refuses a cgroup v1
    host unless failCgroupV1 is false (kind does not set it; the UML guest runs cgroup v2)."""
    minor = config.minor_of(kubernetes)
    return {"failCgroupV1": False} if cgroup_version == 1 and minor >= (1, 35) else {}


def render_kind_config(mode: str, workers: int = config.DEFAULT_WORKERS,
                       kube_proxy_extra: dict | None = None, engine_tuning: dict | None = None,
                       kubelet: dict | None = None, kubeadm_patches: list[str] | None = None) -> str:
    """kind-configs/<mode>.yaml with the node list and kube-proxy settings filled in.

    `kube_proxy_extra` becomes a KubeProxyConfiguration patch, e.g.
    {"iptables": {"masqueradeAll": True}} or {"ipvs": {"scheduler": "lc"}}.
    `kubeadm_patches`: more kubeadm patches of the caller's (YAML text), before the engine's.
    """
    if mode not in config.PROXY_MODES:
        raise ValueError(f"unknown proxy mode {mode!r}; expected one of {', '.join(config.PROXY_MODES)}")
    if workers < 0:
        raise ValueError("workers must be 0 or more")
    cfg = yaml.safe_load((config.KIND_CONFIGS / f"{mode}.yaml").read_text())
    cfg.setdefault("networking", {})["kubeProxyMode"] = mode
    cfg["nodes"] = [{"role": "control-plane"}] + [{"role": "worker"} for _ in range(workers)]
    if kube_proxy_extra:
        patch = {"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
                 **copy.deepcopy(kube_proxy_extra)}
        cfg.setdefault("kubeadmConfigPatches", []).append(yaml.safe_dump(patch, sort_keys=False))
    if kubelet:
        patch = {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration", **kubelet}
        cfg.setdefault("kubeadmConfigPatches", []).append(yaml.safe_dump(patch, sort_keys=False))
    if kubeadm_patches:
        cfg.setdefault("kubeadmConfigPatches", []).extend(kubeadm_patches)
    if engine_tuning:
        # An engine elsewhere (harness.guest): the API server's address/port on that engine's
        # host link, and kubeadm patches that make a slow machine's control plane reliable.
        cfg["networking"].update(engine_tuning.get("networking", {}))
        cfg.setdefault("kubeadmConfigPatches", []).extend(engine_tuning.get("kubeadm_patches", []))
    return yaml.dump(cfg, Dumper=_BlockDumper, sort_keys=False)


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (kubeadm patches) as readable `|` blocks."""


_BlockDumper.add_representer(str, lambda d, s: d.represent_scalar(
    "tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


@dataclass
class KindCluster:
    name: str
    mode: str
    workers: int = config.DEFAULT_WORKERS
    node_image: str = ""
    kube_proxy_extra: dict = field(default_factory=dict)
    damage: str = ""                # deliberate breaks applied after creation (harness.breaks.identity)
    keep: bool = False
    reuse: bool = False
    runner: Runner = DEFAULT
    engine_tuning: dict = field(default_factory=dict)   # see render_kind_config; {} on the host engine
    kubelet: dict = field(default_factory=dict)          # KubeletConfiguration fields (kubelet_settings)
    kubeadm_patches: list = field(default_factory=list)  # more kubeadm patches (render_kind_config)
    create_timeout: float = config.CLUSTER_CREATE_TIMEOUT
    created: bool = False           # did this object create it (and so may delete it)?
    create_seconds: float = 0.0
    engine: "engines.Engine | None" = None   # where it runs (default: the engine `runner` reaches)
    owner: Owner | None = None               # who may delete it (default: this process)
    # Brings the engine back before another attempt (assembly: Engine.up); a guest whose kernel
    # died in an attempt is down, and kind would only find its engine unreachable.
    engine_back: Callable[[], object] | None = None

    def __post_init__(self):
        if self.engine is None:
            self.engine = engines.of(self.runner)
        else:
            self.runner = self.engine.runner
        self.owner = self.owner or Owner.of()

    @classmethod
    def ours(cls, name: str, owner: Owner | None = None) -> "KindCluster":
        """A cluster of ours by name, on the engine its marker records (for deletion, logs, clean-up)."""
        m = read_json(config.CACHE / "clusters" / f"{name}.json") or {}
        return cls(name=name, mode=m.get("mode", "iptables"), engine=engines.from_marker(m), owner=owner)

    # ---- paths ---------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return config.CACHE / "kubeconfigs" / f"{self.name}.yaml"

    @property
    def marker(self) -> Path:
        return config.CACHE / "clusters" / f"{self.name}.json"

    # ---- queries -------------------------------------------------------
    def exists(self) -> bool:
        res = self.runner.run([config.tool("kind"), "get", "clusters"], check=False)
        return self.name in res.stdout.split()

    def owned(self) -> bool:
        return self.marker.exists()

    def held_by_other(self) -> Owner | None:
        """The live owner of this cluster's marker, if that is not us."""
        held = Owner.from_dict((read_json(self.marker) or {}).get("owner"))
        return held if held and held.alive() and held != self.owner else None

    def nodes(self) -> list[Node]:
        names = self.runner.run([config.tool("kind"), "get", "nodes", "--name", self.name]).stdout.split()
        if not names:
            return []
        def read(c) -> list[Node]:
            out = []
            for name in names:
                a = c.containers.get(name).attrs
                net = (a["NetworkSettings"].get("Networks") or {}).get(config.KIND_NETWORK) or {}
                out.append(Node(name, net.get("IPAddress", ""), a["Config"]["Labels"].get("io.x-k8s.kind.role", "")))
            return out
        nodes = self.runner.engine(f"inspect the nodes of {self.name}", read)
        return sorted(nodes, key=lambda n: (n.role != "control-plane", n.name))

    # ---- lifecycle -----------------------------------------------------
    def __enter__(self) -> "KindCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        if not self.keep:
            self.delete()

    def start(self) -> None:
        """Create the cluster, or reuse ours if asked; never touch someone else's."""
        reason = self.engine.unavailable_reason(self.mode)
        if reason:
            raise engines.PreflightError(reason)
        engines.engine_ready(self.runner)
        check_kind_version(self.runner)
        if self.exists():
            if not self.owned():
                raise ClusterError(
                    f"a kind cluster named {self.name!r} exists but was not created by this harness "
                    f"(no {self.marker}); it is left alone. Pick another --cluster-prefix, or use "
                    f"--byo-kubeconfig to run against it")
            other = self.held_by_other()
            if other:
                raise ClusterError(f"kind cluster {self.name!r} belongs to a run that is still going ({other}); "
                                   f"it is left alone. Pick another --cluster-prefix")
            if self.reuse and self._same_config() and self._healthy():
                log.info("reusing cluster %s", self.name)
                self._write_marker(json.loads(self.marker.read_text()).get("config", ""))
                self.engine.ensure_guard()
                return
            log.info("deleting stale cluster %s left by an earlier run", self.name)
            self._kind_delete()
        self.engine.ensure_guard()
        self._create_with_retries()

    def _rendered(self) -> str:
        cfg = render_kind_config(self.mode, self.workers, self.kube_proxy_extra, self.engine_tuning, self.kubelet,
                                 self.kubeadm_patches)
        # Reuse only a cluster of the same node image (so the same Kubernetes release), and never
        # mistake a deliberately broken cluster for a healthy one.
        cfg += f"# svc-harness node image: {self.node_image or 'kind default'}\n"
        return cfg + (f"# svc-harness breaks: {self.damage}\n" if self.damage else "")

    def _same_config(self) -> bool:
        """Reuse only a cluster made from the same kind config (mode, workers, kube-proxy settings)."""
        try:
            return json.loads(self.marker.read_text()).get("config") == self._rendered()
        except (OSError, ValueError):
            return False

    def _healthy(self) -> bool:
        if not self.kubeconfig.exists():
            return False
        res = self.runner.run([config.tool("kubectl"), "--kubeconfig", str(self.kubeconfig), "get", "nodes",
                               "-o", "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}"],
                              check=False, timeout=30)
        states = res.stdout.split()
        return res.ok and len(states) == self.workers + 1 and set(states) == {"True"}

    def _create_with_retries(self) -> None:
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        self.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        cfg = self._rendered()
        cfg_path = config.CACHE / "clusters" / f"{self.name}.kind.yaml"
        write_text(cfg_path, cfg)
        # The marker goes down before kind starts, so an interrupted create is still ours to clean up.
        self._write_marker(cfg)
        self.created = True
        last: CommandError | None = None
        for attempt in range(1, config.CLUSTER_CREATE_ATTEMPTS + 1):
            argv = [config.tool("kind"), "create", "cluster", "--name", self.name, "--config", str(cfg_path),
                    "--kubeconfig", str(self.kubeconfig), "--wait", f"{int(self.create_timeout) // 2}s", "--retain"]
            if self.node_image:
                argv += ["--image", self.node_image]
            try:
                with Step(f"creating kind cluster {self.name} ({self.mode}, 1 control-plane + "
                          f"{self.workers} worker{'s' if self.workers != 1 else ''}, attempt {attempt})") as st:
                    self.runner.run(argv, timeout=self.create_timeout, what=f"kind create cluster {self.name}",
                                    stream=True)
                    self._apply_engine_tuning()
                    self._wait_system_ready()
                    self._seal_dns()
                    # The API server serves before its post-start hooks are done; in the guest one
                    # timed out seconds after the cluster was handed over, and the server restarted.
                    Kube(self.kubeconfig, self.runner).wait_api_ready()
                self.create_seconds = st.seconds
                return
            except CommandError as e:
                last = e
                log.warning("cluster %s: attempt %d failed: %s", self.name, attempt, e)
                if self.engine.down_and_self_cleaning():  # a guest that died: minutes of timeouts to learn nothing
                    log.warning("cluster %s: its engine (%s) is down: no logs to export or nodes to delete there "
                                "until it is back", self.name, self.engine.describe())
                    gone = False
                else:
                    self._export_logs_on_failure()
                    gone = self._kind_delete()
                if self.engine_back and attempt < config.CLUSTER_CREATE_ATTEMPTS:
                    self.engine_back()
                    if not gone:  # its engine did not answer then: the nodes may be back with it
                        self._kind_delete()
        raise ClusterError(f"could not create kind cluster {self.name} after "
                           f"{config.CLUSTER_CREATE_ATTEMPTS} attempts; last error:\n{last}")

    def _write_marker(self, cfg: str) -> None:
        write_json(self.marker, {"created_by": "svc-harness", "mode": self.mode, "config": cfg,
                                 "owner": self.owner.to_dict(), "time": time.time(),
                                 "where": self.engine.describe(), **self.engine.marker()})

    def _apply_engine_tuning(self) -> None:
        """What an engine elsewhere asks for once the cluster exists (see harness.guest.vm.kind_tuning)."""
        cpu = self.engine_tuning.get("kube_proxy_cpu_request")
        if cpu:
            # All pods at once: one at a time, each new pod's start and first full sync cost
            # about a minute in the guest, so three nodes took three.
            patch = {"spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": "100%"}},
                              "template": {"spec": {"containers": [
                                  {"name": "kube-proxy", "resources": {"requests": {"cpu": cpu}}}]}}}}
            self.runner.run([config.tool("kubectl"), "--kubeconfig", str(self.kubeconfig), "-n", "kube-system",
                             "patch", "daemonset", "kube-proxy", "-p", json.dumps(patch)],
                            what=f"giving kube-proxy a CPU request of {cpu}")

    def _wait_system_ready(self) -> None:
        wait_system_ready(self.kubeconfig, self.runner, timeout=max(180, int(self.create_timeout) // 2))

    def _seal_dns(self) -> None:
        seal_coredns(self.kubeconfig, self.runner, timeout=max(180, int(self.create_timeout) // 2))

    def _export_logs_on_failure(self) -> None:
        dest = config.CACHE / "failed-create" / f"{self.name}-{int(time.time())}"
        self.runner.run([config.tool("kind"), "export", "logs", str(dest), "--name", self.name],
                        check=False, timeout=300)
        log.warning("kind logs of the failed attempt: %s", dest)

    def _kind_delete(self) -> bool:
        # --byo-kubeconfig keeps kind away from ~/.kube/config on delete too.
        res = self.runner.run([config.tool("kind"), "delete", "cluster", "--name", self.name,
                               "--kubeconfig", str(self.kubeconfig)], check=False, timeout=300)
        # Node containers a killed create or delete left half-made (kind no longer lists them, and
        # the next create of this name fails on their names): they carry the cluster's label.
        label = f"{config.KIND_CLUSTER_LABEL}={self.name}"
        engines.remove_containers(self.runner, label)
        # Gone only if the engine says so: kind exits 0 when it cannot reach the engine at all.
        left = engines.list_containers(self.runner, label)
        if not res.ok:
            log.warning("kind delete cluster %s failed (exit %d): %s", self.name, res.returncode,
                        (res.stderr or res.stdout).strip()[-500:])
        if left is None:
            log.warning("cluster %s: its engine (%s) does not answer, so whether its nodes are gone is "
                        "unknown", self.name, self.engine.describe())
            return False
        return not left

    def delete(self) -> bool:
        """Delete the cluster if this harness created it (marker present) and no other live run
        holds it. A delete that fails keeps the marker, so the next run or clean-up finishes it."""
        if not self.owned():
            if self.exists():
                log.info("not deleting %s: not created by this harness", self.name)
            else:
                log.info("no cluster %s to delete", self.name)
            return False
        other = self.held_by_other()
        if other:
            log.info("not deleting %s: a run that is still going owns it (%s)", self.name, other)
            return False
        with Step(f"deleting kind cluster {self.name}") as step:
            if not self._kind_delete():
                step.failed = True
                log.warning("cluster %s is still there; its marker %s stays so a later run can delete it",
                            self.name, self.marker)
                return False
        self.forget()
        self.engine.remove_guard_if_unused()
        return True

    def forget(self) -> None:
        """Drop the harness's files of this cluster (marker, kubeconfig, kind config)."""
        self.marker.unlink(missing_ok=True)
        self.kubeconfig.unlink(missing_ok=True)
        self.marker.with_suffix(".kind.yaml").unlink(missing_ok=True)


def wait_system_ready(kubeconfig: Path, runner: Runner = DEFAULT, timeout: int = 180) -> None:
    """All nodes Ready, kube-proxy and CoreDNS rolled out: a real readiness signal.
    (`timeout` per wait: a guest engine is slower than the host's.)"""
    kubectl = [config.tool("kubectl"), "--kubeconfig", str(kubeconfig)]
    runner.run([*kubectl, "wait", "--for=condition=Ready", "nodes", "--all", f"--timeout={timeout}s"],
               timeout=timeout + 20, what="waiting for nodes Ready")
    # The node lifecycle controller lifts a node's not-ready taint seconds after the node turns
    # Ready (seen: a worker Ready but still tainted NoExecute, so it took no pods).
    from .waits import Wait
    Wait("every node without a not-ready/unreachable taint", timeout=timeout).until(
        lambda: _not_ready_tainted(kubectl, runner), lambda tainted: not tainted)
    for obj in ("daemonset/kube-proxy", "daemonset/kindnet", "deployment/coredns"):
        res = runner.run([*kubectl, "-n", "kube-system", "get", obj], check=False)
        if res.ok:  # upstream images may name the CNI differently
            runner.run([*kubectl, "-n", "kube-system", "rollout", "status", obj, f"--timeout={timeout}s"],
                       timeout=timeout + 20, what=f"waiting for {obj}")


def _not_ready_tainted(kubectl: list[str], runner: Runner) -> list[str]:
    """Names of nodes still carrying the node lifecycle controller's not-ready/unreachable taint."""
    out = runner.run([*kubectl, "get", "nodes", "-o",
                      "jsonpath={range .items[*]}{.metadata.name}={.spec.taints[*].key}{'\\n'}{end}"],
                     what="reading node taints").stdout
    return [line.split("=", 1)[0] for line in out.splitlines()
            if "node.kubernetes.io/not-ready" in line or "node.kubernetes.io/unreachable" in line]


def seal_coredns(kubeconfig: Path, runner: Runner = DEFAULT, timeout: int = 120) -> None:
    """Keep cluster DNS inside the machine: drop CoreDNS's upstream `forward`.

    kind points nodes at Docker's embedded DNS, which forwards unknown
    names from the node's network namespace, i.e. through the kind bridge
    to the outside (the egress guard drops them). The suites resolve only
    cluster names, so CoreDNS answers those and forwards nothing.
    (Only for clusters the harness makes, and the byo test bed's own: with
    --byo-kubeconfig the harness never edits CoreDNS.)
    """
    kubectl = [config.tool("kubectl"), "--kubeconfig", str(kubeconfig)]
    cm = json.loads(runner.run([*kubectl, "-n", "kube-system", "get", "configmap", "coredns",
                                "-o", "json"]).stdout)
    corefile = cm["data"]["Corefile"]
    sealed = re.sub(r"^[ \t]*forward \. /etc/resolv\.conf[^\n]*\{[^}]*\}[ \t]*\n", "", corefile, flags=re.M)
    sealed = re.sub(r"^[ \t]*forward \. /etc/resolv\.conf[^\n{]*\n", "", sealed, flags=re.M)
    if sealed == corefile:
        return
    cm["data"]["Corefile"] = sealed
    for k in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
        cm["metadata"].pop(k, None)
    runner.run([*kubectl, "apply", "-f", "-"], input=json.dumps(cm), what="sealing CoreDNS")
    runner.run([*kubectl, "-n", "kube-system", "rollout", "restart", "deployment/coredns"])
    # (`timeout`: a guest engine's cluster is slower; seen: CoreDNS took over 120 s to roll there)
    runner.run([*kubectl, "-n", "kube-system", "rollout", "status", "deployment/coredns",
                f"--timeout={timeout}s"], timeout=timeout + 30, what="waiting for sealed CoreDNS")


@contextlib.contextmanager
def use(lock_file: Path, exclusive: bool = False, what: str = ""):
    """Hold a shared or exclusive claim on a cluster that xdist workers share.

    Every test holds a shared claim while it uses its mode's cluster; a test that changes the
    whole cluster for a while (a node cut off, kube-proxy's scheduler switched and restarted)
    holds an exclusive one, so it never runs beside another test on that cluster. flock(2)
    claims die with their process, so a crashed worker cannot leave one behind.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as f:
        started = time.monotonic()
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        waited = time.monotonic() - started
        if waited > 1:
            log.info("waited %.0fs for %s use of the cluster%s", waited, "exclusive" if exclusive else "shared",
                     f" ({what})" if what else "")
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def runner_for(name: str) -> Runner:
    """The runner that reaches the engine a cluster of ours was created on (from its marker)."""
    return KindCluster.ours(name).runner


def claim_name(base: str, owner: Owner, engine: "engines.Engine") -> str:
    """A cluster name that no live run holds: `base`, else `base-2`, `base-3`, ...

    The claim is the ownership marker, written behind a machine-wide lock, so two runs started
    at the same moment with the same --cluster-prefix get different clusters. A name whose cluster
    exists without a marker (someone else's) is returned as it is: KindCluster.start refuses it.
    """
    clusters = config.CACHE / "clusters"
    clusters.mkdir(parents=True, exist_ok=True)
    with FileLock(str(clusters / ".claim.lock"), timeout=120):
        for i in range(1, 50):
            name = base if i == 1 else f"{base}-{i}"
            path = clusters / f"{name}.json"
            m = read_json(path)
            held = Owner.from_dict((m or {}).get("owner"))
            if held and held != owner and held.alive():
                continue
            if m is None and name in engine.runner.run([config.tool("kind"), "get", "clusters"],
                                                       check=False).stdout.split():
                return name
            write_json(path, {**(m or {"created_by": "svc-harness", "time": time.time()}),
                              "owner": owner.to_dict(), **engine.marker()})
            if i > 1:
                log.warning("cluster name %s is held by a run that is still going (%s); this run uses %s",
                            base, Owner.from_dict((read_json(clusters / f"{base}.json") or {}).get("owner")), name)
            return name
    raise ClusterError(f"no free cluster name {base}, {base}-2, ... {base}-49: live runs hold them all")


def delete_owned(name: str) -> bool:
    """Delete a cluster by name if (and only if) this harness created it and no live run holds it."""
    return KindCluster.ours(name).delete()
