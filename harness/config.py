"""Defaults, pinned versions and paths: the one place to look them up."""
from __future__ import annotations

import os
import shutil
from pathlib import Path



def _checkout() -> Path:
    """The checkout whose kind-configs/, manifests/, images/ and suites/ the harness uses: the one
    this package sits in (editable install, or run from the checkout), else SVC_HARNESS_HOME, else
    the current directory (a non-editable install run from a checkout)."""
    beside = Path(__file__).resolve().parent.parent
    for candidate in (beside, os.environ.get("SVC_HARNESS_HOME"), Path.cwd()):
        if candidate and (Path(candidate) / "kind-configs").is_dir():
            return Path(candidate).resolve()
    return beside  # nothing found: errors will name the missing files under it


REPO = _checkout()
IMAGES_DIR = REPO / "images"
KIND_CONFIGS = REPO / "kind-configs"
MANIFESTS = REPO / "manifests"
SCRIPTS = REPO / "scripts"

# Build outputs and cluster kubeconfigs live outside the repo so a fresh clone
# (CI) on the same machine reuses them; override with SVC_HARNESS_CACHE.
CACHE = Path(os.environ.get("SVC_HARNESS_CACHE",
                            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "svc-harness"))
BIN = CACHE / "bin"

PROXY_MODES = ("iptables", "ipvs", "nftables")
DEFAULT_CLUSTER_PREFIX = "svc-harness"
# Node hostnames must fit in 64 characters: the prefix, then "-nftables", E16's "-switch-gw12", a
# concurrent run's "-49" and kind's "-control-plane" (38 in all).
CLUSTER_PREFIX_MAX = 26
DEFAULT_WORKERS = 2
KIND_NETWORK = "kind"
# Labels on every container/cluster this harness creates, so it never touches others'.
OWNER_LABEL = "io.svc-harness.owner"
KIND_CLUSTER_LABEL = "io.x-k8s.kind.cluster"  # kind's own label on a cluster's node containers

# Timeouts (seconds) in one place.
CLUSTER_CREATE_TIMEOUT = 600
CLUSTER_CREATE_ATTEMPTS = 2
ROLLOUT_TIMEOUT = 120
ENDPOINTS_TIMEOUT = 60
CONVERGE_TIMEOUT = 60
POLL_INTERVAL = 0.5


# Factor on every wait's timeout, set by the user for a slow machine; each engine adds its own
# (harness.waits.slower; the UML guest's is GUEST_SLOWDOWN).
SLOWDOWN_ENV = "SVC_HARNESS_SLOWDOWN"
GUEST_SLOWDOWN = 3


def slowdown() -> float:
    return float(os.environ.get(SLOWDOWN_ENV, "1"))


def versions() -> dict[str, str]:
    """images/versions.env as a dict (KEY=VALUE lines, '#' comments)."""
    out = {}
    for line in (IMAGES_DIR / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def tool(name: str) -> str:
    """Path of a command: the harness's own build (BIN) first, then PATH.

    The host's kubectl may be any version (here a cloud SDK shim), so the one
    built with the cluster's Kubernetes version is preferred.
    """
    own = BIN / name
    if own.exists():
        return str(own)
    found = shutil.which(name) or (shutil.which(name, path=str(Path.home() / "go" / "bin")))
    return found or name


def node_image_tag() -> str:
    v = versions()
    return f"svc-harness/node:{v['KUBERNETES_VERSION']}"


# Free space (GiB) a cold step needs where it writes: measured sizes plus room to spare.
FREE_GIB_IMAGES = 12       # Go build cache ~5.5, module cache ~1.7, images ~2.5 in the engine
FREE_GIB_GUEST_BUILD = 4   # kernel tree while it builds, rootfs ~0.5
FREE_GIB_GUEST_DISK = 14   # the guest's disk: images and its clusters' node volumes (~13 seen)
FREE_GIB_GUEST_MEMORY = 6  # the guest's memory file in /dev/shm (~4 used with a 2-node cluster)


class NoSpace(RuntimeError):
    pass


def require_free_space(path: Path, gib: float, what: str) -> None:
    """Stop before a step that would run out of disk halfway (and leave half-written caches)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    free = shutil.disk_usage(p).free / 2**30
    if free < gib:
        raise NoSpace(f"{what} needs about {gib:g} GiB free under {path}; {free:.1f} GiB are: free some "
                      f"space (or point SVC_HARNESS_CACHE / SVC_GUEST_DISK_DIR elsewhere) and rerun")
