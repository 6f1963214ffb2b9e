"""One way to assemble a cluster, used by the suites' fixture, the benchmark and the test beds.

Ordered steps, each timed: engine -> kind create (tuning and DNS seal inside) ->
images -> load balancer -> breaks. The engine (harness.engine.choose) decides
where the cluster runs and what shape it can have; nothing here branches on
which engine it is.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from . import breaks as breaks_mod
from . import config
from .cluster import KindCluster, kubelet_settings
from .engine import Engine, image_id
from .kube import Kube
from .lab import ClusterHandle, Images
from .owners import Owner
from .runner import DEFAULT, Runner
from .waits import slower

log = logging.getLogger(__name__)


def _image_exists(tag: str) -> bool:
    return bool(image_id(DEFAULT, tag))


def resolve_images(node_image: str = "", demo_image: str = "") -> tuple[str, Images, bool]:
    """(node image, workload images, whether the node image already holds them)."""
    v = config.versions()
    ours = config.node_image_tag()
    if not node_image and not _image_exists(ours) and not DEFAULT.engine(
            "ping", lambda c: c.ping(), check=False, default=False, timeout=15):
        # Without this the run would fall back to the upstream node image and fail later on a
        # registry pull, which hides the real cause.
        raise RuntimeError(f"the host's Docker engine does not answer, so its image {ours} cannot be "
                           "found or loaded: start it (scripts/engine-up) or pass --node-image")
    node = node_image or (ours if _image_exists(ours) else v["UPSTREAM_NODE_IMAGE"])
    t = v["HARNESS_TAG"]
    images = Images(demoapp=demo_image or f"svc-harness/demoapp:{t}", toolbox=f"svc-harness/toolbox:{t}")
    return node, images, node == ours


def load_images(name: str, tags: list[str], runner: Runner = DEFAULT) -> None:
    """`kind load` host images into a cluster's nodes (on whatever engine `runner` reaches)."""
    for tag in tags:
        if _image_exists(tag):
            runner.run([config.tool("kind"), "load", "docker-image", tag, "--name", name], timeout=600,
                       what=f"loading {tag} into {name}")


@dataclass
class Recipe:
    """What to build: a kind cluster of `mode` on `engine`, owned by `owner` (run `run_key`)."""
    name: str
    mode: str
    engine: Engine
    owner: Owner
    run_key: str
    workers: int = config.DEFAULT_WORKERS
    node_image: str = ""
    demo_image: str = ""
    kube_proxy_extra: dict = field(default_factory=dict)
    kubeadm_patches: list = field(default_factory=list)  # e.g. the benchmark's control-plane settings
    breaks: tuple = ()
    reuse: bool = False
    lb_provider: str = "none"


@dataclass
class Assembled:
    kind: KindCluster
    images: Images
    node_image: str
    nodes: int
    lb: str = "none"
    size_note: str = ""
    loads: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def handle(self, mode: str, worker: str = "main", **extra) -> ClusterHandle:
        kc = self.kind
        return ClusterHandle(mode=mode, name=kc.name, kube=Kube(kc.kubeconfig), nodes=kc.nodes(), images=self.images,
                             kind=kc, worker=worker, runner=kc.runner, slowdown=kc.engine.slowdown, **extra)


def build(r: Recipe, on_created=None) -> Assembled:
    """Assemble the cluster `r` describes. `on_created(name)` is called before kind starts, so an
    interrupted run can still delete a half-made cluster."""
    node_image, images, baked = resolve_images(r.node_image, r.demo_image)
    timings: dict[str, float] = {}

    def timed(step: str, fn):
        t0 = time.monotonic()
        out = fn()
        timings[step] = round(time.monotonic() - t0, 1)
        return out

    def engine_up():
        return r.engine.up(r.run_key, [node_image, images.demoapp, images.toolbox], r.owner)

    loads = timed("engine", engine_up)
    shape = r.engine.shape(r.name, r.workers)
    kubelet = kubelet_settings(config.versions()["KUBERNETES_VERSION"], r.engine.cgroup_version())
    if kubelet:
        log.info("kubelet settings for Kubernetes %s on %s: %s", config.versions()["KUBERNETES_VERSION"],
                 r.engine.describe(), kubelet)
    kc = KindCluster(name=r.name, mode=r.mode, workers=shape.workers, node_image=node_image, reuse=r.reuse,
                     keep=True, engine=r.engine, owner=r.owner, engine_tuning=shape.tuning, kubelet=kubelet,
                     create_timeout=r.engine.create_timeout,
                     kube_proxy_extra={**r.kube_proxy_extra, **breaks_mod.kube_proxy_patch(r.breaks, r.mode)},
                     kubeadm_patches=list(r.kubeadm_patches), damage=breaks_mod.identity(r.breaks),
                     engine_back=engine_up)
    if on_created:
        on_created(r.name)
    out = Assembled(kind=kc, images=images, node_image=node_image, nodes=shape.workers + 1,
                    size_note=shape.note, loads=loads, timings=timings)
    with slower(r.engine.slowdown):
        timed("kind create", kc.start)
        if not baked:
            timed("images", lambda: load_images(r.name, [images.demoapp, images.toolbox], kc.runner))
        if r.lb_provider == "metallb":
            from . import loadbalancer
            out.lb = timed("load balancer", lambda: loadbalancer.install_metallb(Kube(kc.kubeconfig), r.mode,
                                                                                kc.runner))
        if kc.created:
            timed("breaks", lambda: _apply_cluster_breaks(r.breaks, out))
    log.info("cluster %s assembled on %s: %s", r.name, r.engine.describe(),
             ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    return out


def _apply_cluster_breaks(active, out: Assembled) -> None:
    """Damage a freshly made cluster on purpose (--break); see harness.breaks."""
    handle = out.handle(out.kind.mode)
    for b in active:
        if b.on_cluster:
            log.warning("breaking cluster %s on purpose: %s", out.kind.name, b.fault)
            b.on_cluster(handle)
