"""Build upstream's e2e.test, the ginkgo CLI and agnhost from the pinned k8s.io/kubernetes module.

All three come from images/e2e (a small Go module that requires k8s.io/kubernetes
at KUBERNETES_VERSION, staging modules replaced by their published twins) through
harness.images' GoBuild machinery, so each is skipped when its inputs are unchanged.

agnhost, the image every Services spec runs, is built by harness.images (it is baked
into the node image); e2e.test and ginkgo run on the host and are built only when
--upstream-conformance asks.
"""
from __future__ import annotations

from pathlib import Path

from .. import config
from ..images import E2E_MODULE, Builder, GoBuild, agnhost_build, agnhost_image, agnhost_ref, e2e_pins, k8s_ldflags
from ..runner import DEFAULT, Runner

__all__ = ["agnhost_ref", "ensure", "runner_builds"]


def runner_builds(v: dict[str, str]) -> list[GoBuild]:
    """What runs the specs from the host: e2e.test (stamped with the version like a release) and ginkgo."""
    k = v["KUBERNETES_VERSION"]
    return [GoBuild("e2e.test", E2E_MODULE, ["k8s.io/kubernetes/test/e2e"], test=True, ldflags=k8s_ldflags(k),
                    version_keys=("KUBERNETES_VERSION",), pins=e2e_pins(v), out_dir=config.version_bin(v)),
            GoBuild("ginkgo", E2E_MODULE, ["github.com/onsi/ginkgo/v2/ginkgo"],
                    version_keys=("KUBERNETES_VERSION",), pins=e2e_pins(v), out_dir=config.version_bin(v))]


def ensure(runner: Runner = DEFAULT, force: bool = False) -> dict[str, Path]:
    """e2e.test and ginkgo built (cached) and the agnhost image present; {name: path}."""
    b = Builder(runner, force=force)
    b.preflight()
    out = {}
    for gb in runner_builds(b.v):
        out[gb.name] = b.go_build(gb)[0]
    b.debian_base()
    b.go_build(agnhost_build(b.v))
    b.image(agnhost_image(b.v, runner))
    return out
