"""Build upstream's e2e.test, the ginkgo CLI and agnhost from the pinned k8s.io/kubernetes module.

All three come from images/e2e (a small Go module that requires k8s.io/kubernetes
at KUBERNETES_VERSION, staging modules replaced by their published twins) through
harness.images' GoBuild machinery, so each is skipped when its inputs are unchanged.

agnhost is the image every Services spec runs (`registry.k8s.io/e2e-test-images/agnhost:2.56`
for v1.34). It is baked into the node image (harness.images adds it to the images
imported into the node's containerd): a cluster then has it on every node from the
first second, while `kind load` would cost every run tens of seconds per cluster.
e2e.test and ginkgo run on the host and are built only when --upstream-conformance asks.
"""
from __future__ import annotations

from pathlib import Path

from .. import config
from ..images import Builder, GoBuild, Image, base_tag, k8s_ldflags, module_dir
from ..runner import DEFAULT, Runner

MODULE = "e2e"                       # images/e2e
AGNHOST_VERSION = "2.56"             # test/images/agnhost/VERSION at v1.34.4; e2e.test asks for this tag
AGNHOST_IMAGE = f"registry.k8s.io/e2e-test-images/agnhost:{AGNHOST_VERSION}"


def _pins(v: dict[str, str]) -> dict[str, str]:
    return {"k8s.io/kubernetes": v["KUBERNETES_VERSION"]}


def agnhost_build(v: dict[str, str]) -> GoBuild:
    return GoBuild("agnhost", MODULE, ["k8s.io/kubernetes/test/images/agnhost"],
                   version_keys=("KUBERNETES_VERSION",), pins=_pins(v))


def runner_builds(v: dict[str, str]) -> list[GoBuild]:
    """What runs the specs from the host: e2e.test (stamped with the version like a release) and ginkgo."""
    k = v["KUBERNETES_VERSION"]
    return [GoBuild("e2e.test", MODULE, ["k8s.io/kubernetes/test/e2e"], test=True, ldflags=k8s_ldflags(k),
                    version_keys=("KUBERNETES_VERSION",), pins=_pins(v)),
            GoBuild("ginkgo", MODULE, ["github.com/onsi/ginkgo/v2/ginkgo"],
                    version_keys=("KUBERNETES_VERSION",), pins=_pins(v))]


def agnhost_image(v: dict[str, str], runner: Runner = DEFAULT) -> Image:
    """agnhost on the Debian base with the tools its pods exec (images/agnhost/Dockerfile)."""
    porter = module_dir("k8s.io/kubernetes", v["KUBERNETES_VERSION"], runner) / "test/images/agnhost/porter"
    return Image(AGNHOST_IMAGE, (config.IMAGES_DIR / "agnhost" / "Dockerfile").read_text(),
                 {"agnhost": config.BIN / "agnhost",
                  "localhost.crt": porter / "localhost.crt", "localhost.key": porter / "localhost.key"},
                 build_args={"BASE_IMAGE": base_tag(v)})


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
