"""Defaults, pinned versions and paths: the one place to look them up."""
from __future__ import annotations

import os
import re
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
# Node hostnames must fit in 64 characters: the prefix, then "-nftables", a concurrent run's "-49",
# kind's "-control-plane" (26 in all), and room for a test bed's suffix.
CLUSTER_PREFIX_MAX = 26
DEFAULT_WORKERS = 2
KIND_NETWORK = "kind"
# Labels on every container/cluster this harness creates, so it never touches others'.
OWNER_LABEL = "io.svc-harness.owner"
BUILDER_LABEL = "io.svc-harness.builder"  # on a node image's build container: the build's process
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


# The Kubernetes release a run uses: a minor with a file images/kubernetes/v<minor>.env holding its
# pins (the patch release and the images kubeadm asks for). Chosen by --kubernetes-version, which sets this
# variable for the whole run (xdist workers and the build commands it starts read it too).
K8S_VERSION_ENV = "SVC_HARNESS_K8S_VERSION"
KUBERNETES_PINS = IMAGES_DIR / "kubernetes"


def _env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, '#' comments."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def minor_of(version: str) -> tuple[int, int]:
    """(major, minor) of "v1.37.2", "1.37" or "v1.35.0-gke.1"."""
    major, minor = re.match(r"v?(\d+)\.(\d+)", version.strip()).groups()
    return int(major), int(minor)


def _minor_key(minor: str) -> tuple[int, ...]:
    return minor_of(minor)


def k8s_minors() -> list[str]:
    """The Kubernetes minors the harness has pins for, oldest first (e.g. ["1.34", "1.37"])."""
    return sorted((p.stem[1:] for p in KUBERNETES_PINS.glob("v*.env")), key=_minor_key)


def k8s_minor(text: str | None = None) -> str:
    """The minor `text` names ("1.37", "v1.37" or the pinned "v1.37.2"); without text, the run's
    (SVC_HARNESS_K8S_VERSION) or the default (KUBERNETES_DEFAULT in images/versions.env)."""
    text = (text or os.environ.get(K8S_VERSION_ENV) or _env_file(IMAGES_DIR / "versions.env")["KUBERNETES_DEFAULT"])
    text = text.strip().lstrip("v")
    minor = ".".join(text.split(".")[:2])
    known = k8s_minors()
    if minor not in known:
        raise ValueError(f"Kubernetes {text!r}: no pins for it; the harness has {', '.join(known)} "
                         f"(files {KUBERNETES_PINS}/v<minor>.env)")
    pinned = _env_file(KUBERNETES_PINS / f"v{minor}.env")["KUBERNETES_VERSION"]
    if text.count(".") == 2 and f"v{text}" != pinned:
        raise ValueError(f"Kubernetes v{text}: the harness pins {pinned} for {minor}; ask for {minor} or {pinned}")
    return minor


def versions(minor: str | None = None) -> dict[str, str]:
    """images/versions.env with the Kubernetes minor's pins (images/kubernetes/v<minor>.env) over it."""
    return {**_env_file(IMAGES_DIR / "versions.env"), **_env_file(KUBERNETES_PINS / f"v{k8s_minor(minor)}.env")}


def version_bin(v: dict[str, str] | None = None) -> Path:
    """Where the binaries built for one Kubernetes release go (kubelet, kubectl, etcd, e2e.test...)."""
    return BIN / (v or versions())["KUBERNETES_VERSION"]


def tool(name: str) -> str:
    """Path of a command: the harness's own build for the run's Kubernetes release, then its
    other builds (BIN), then PATH.

    The host's kubectl may be any version (here a cloud SDK shim), so the one
    built with the cluster's Kubernetes version is preferred.
    """
    for own in (version_bin() / name, BIN / name):
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
