"""Offline image build: everything the suites need, from Go modules and Debian packages.

    python -m harness.images build        # cached; prints each step's time
    python -m harness.images build --force

Where a registry is reachable, --node-image and --demo-image can name upstream
images instead; the toolbox, MetalLB and probe images are always these builds.

Pipeline (each step is skipped when its inputs are unchanged):
  1. debian-base    debootstrap --variant=minbase, `docker import`ed
  2. go binaries    Kubernetes, kindnetd, etcd, CoreDNS, crictl, demo app, probe, pause
  3. images         control-plane images under the names kubeadm asks for,
                    kube-proxy/kindnetd on a netfilter base, demo app, toolbox
  4. node image     kind's node files + the binaries, then every image above
                    imported into the node's containerd, committed

Caching: a Go build is skipped when the hash of its module sources and the
pinned versions matches a stamp file; an image is skipped when its
`io.svc-harness.inputs` label matches the hash of its inputs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .cli import add_kubernetes_version, tool_prog, use_kubernetes_version
from . import config
from .owners import Owner, move_into, write_text
from .runner import DEFAULT, CommandError, Runner, Step

log = logging.getLogger(__name__)

INPUTS_LABEL = "io.svc-harness.inputs"
BASE_IMAGE = "svc-harness/debian-base"


class BuildError(RuntimeError):
    """A build step failed; the message says which and what to do."""


@dataclass
class GoBuild:
    """One `go build` in a module under images/."""
    name: str
    module: str                      # folder under images/
    packages: list[str]              # package -> output binary name is the last path element
    rename: dict[str, str] = field(default_factory=dict)
    version_keys: tuple[str, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)  # where version_keys are read (default: the builder's)
    ldflags: str = "-s -w"
    pins: dict[str, str] = field(default_factory=dict)  # Go module path -> version (from versions.env)
    test: bool = False               # `go test -c`: the package's test binary (<name>.test), e.g. e2e.test
    out_dir: Path = config.BIN       # config.version_bin(v) for what is built per Kubernetes release

    def outputs(self) -> list[Path]:
        names = [p.rstrip("/").split("/")[-1] + (".test" if self.test else "") for p in self.packages]
        return [self.out_dir / self.rename.get(n, n) for n in names]

    @property
    def stamp_name(self) -> str:
        return f"go-{self.name}" + ("" if self.out_dir == config.BIN else f"-{self.out_dir.name}")


def k8s_ldflags(version: str) -> str:
    """kubeadm and kubelet check their own version; stamp it like release builds do."""
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.gitVersion={version}", f"-X {pkg}.gitMajor={major}",
                  f"-X {pkg}.gitMinor={minor}", f"-X {pkg}.gitTreeState=clean",
                  f"-X {pkg}.gitCommit={'0' * 40}", f"-X {pkg}.buildDate=2026-01-01T00:00:00Z"]
    return " ".join(flags)


K8S_COMMANDS = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy",
                "kubelet", "kubeadm", "kubectl"]


def staging_version(kubernetes_version: str) -> str:
    """k8s.io/kubernetes v1.34.4 publishes its staging modules (k8s.io/api, ...) as v0.34.4."""
    return "v0." + kubernetes_version.lstrip("v").split(".", 1)[1]


def staging_modules(gomod: str) -> set[str]:
    """The k8s.io modules a go.mod replaces (k8s.io/kubernetes: `k8s.io/api => ./staging/src/k8s.io/api`)."""
    out = set()
    for line in gomod.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>" and parts[0].startswith("k8s.io/"):
            out.add(parts[0])
    return out


# agnhost: the image every upstream Services spec runs (harness.upstream). It is baked into the node
# image: a cluster then has it on every node from the first second, where `kind load` would cost
# every run tens of seconds per cluster.
E2E_MODULE = "e2e"                   # images/e2e: requires k8s.io/kubernetes (e2e.test, ginkgo, agnhost)


def agnhost_ref(v: dict[str, str]) -> str:
    """The agnhost image e2e.test of this release asks for (AGNHOST_VERSION in its pins)."""
    return f"registry.k8s.io/e2e-test-images/agnhost:{v['AGNHOST_VERSION']}"


def e2e_pins(v: dict[str, str]) -> dict[str, str]:
    return {"k8s.io/kubernetes": v["KUBERNETES_VERSION"]}


def agnhost_source(v: dict[str, str]) -> dict[str, str]:
    """The release whose source agnhost is built from for release `v`. agnhost is versioned apart
    from Kubernetes: releases whose e2e.test asks for the same tag share the default release's
    build, so one tag never names two different images (and a second release costs no build)."""
    default = config.versions(v["KUBERNETES_DEFAULT"])
    return default if default["AGNHOST_VERSION"] == v["AGNHOST_VERSION"] else v


def agnhost_build(v: dict[str, str]) -> "GoBuild":
    src = agnhost_source(v)
    return GoBuild("agnhost", E2E_MODULE, ["k8s.io/kubernetes/test/images/agnhost"], version_keys=("KUBERNETES_VERSION",),
                   versions=src, pins=e2e_pins(src), out_dir=config.version_bin(src))


def agnhost_image(v: dict[str, str], runner: Runner = DEFAULT) -> "Image":
    """agnhost on the Debian base with the tools its pods exec (images/agnhost/Dockerfile)."""
    v = agnhost_source(v)
    porter = module_dir("k8s.io/kubernetes", v["KUBERNETES_VERSION"], runner) / "test/images/agnhost/porter"
    return Image(agnhost_ref(v), (config.IMAGES_DIR / "agnhost" / "Dockerfile").read_text(),
                 {"agnhost": config.version_bin(v) / "agnhost",
                  "localhost.crt": porter / "localhost.crt", "localhost.key": porter / "localhost.key"},
                 build_args={"BASE_IMAGE": base_tag(v)})


def go_builds(v: dict[str, str]) -> list[GoBuild]:
    k, kbin = v["KUBERNETES_VERSION"], config.version_bin(v)
    return [agnhost_build(v),
        GoBuild("kubernetes", "k8s", [f"k8s.io/kubernetes/cmd/{c}" for c in K8S_COMMANDS] + ["./kindnetd"],
                version_keys=("KUBERNETES_VERSION",), ldflags=k8s_ldflags(k),
                pins={"k8s.io/kubernetes": k}, out_dir=kbin),
        GoBuild("tools", "tools", ["./demoapp", "./probe", "./pause"], rename={"probe": "svc-probe"}),
        GoBuild("etcd", "etcd", ["."], rename={".": "etcd"}, version_keys=("ETCD_VERSION",),
                pins={"go.etcd.io/etcd/server/v3": v["ETCD_VERSION"]}, out_dir=kbin),
        GoBuild("coredns", "coredns", ["."], rename={".": "coredns"}, version_keys=("COREDNS_VERSION",),
                pins={"github.com/coredns/coredns": v["COREDNS_VERSION"]}, out_dir=kbin),
        GoBuild("crictl", "crictl", ["sigs.k8s.io/cri-tools/cmd/crictl"], version_keys=("CRICTL_VERSION",),
                pins={"sigs.k8s.io/cri-tools": v["CRICTL_VERSION"]}, out_dir=kbin),
        GoBuild("metallb", "metallb", ["go.universe.tf/metallb/controller", "go.universe.tf/metallb/speaker"],
                rename={"controller": "metallb-controller", "speaker": "metallb-speaker"},
                version_keys=("METALLB_VERSION",), pins={"go.universe.tf/metallb": v["METALLB_VERSION"]}),
    ]


@dataclass
class Image:
    """A docker image built from generated or in-repo Dockerfile plus binaries."""
    tag: str
    dockerfile: str                  # Dockerfile text
    files: dict[str, Path]           # name in context -> source path
    node_ref: str = ""               # name the node's containerd must know it by
    build_args: dict[str, str] = field(default_factory=dict)


def static_image(tag: str, binary: str, entrypoint: list[str] | None = None, dest: str = "",
                 src: Path = config.BIN) -> Image:
    """A static Go binary (from folder `src`) on an empty filesystem (like upstream's distroless images)."""
    dest = dest or f"/usr/local/bin/{binary}"
    lines = ["FROM scratch", "COPY tmp/ /tmp/", f"COPY {binary} {dest}", "ENV PATH=/usr/local/bin:/"]
    if entrypoint:
        lines.append("ENTRYPOINT " + str(entrypoint).replace("'", '"'))
    return Image(tag, "\n".join(lines) + "\n", {binary: src / binary})


def on_base(tag: str, base: str, binary: str, entrypoint: list[str] | None = None, src: Path = config.BIN) -> Image:
    lines = [f"FROM {base}", f"COPY {binary} /usr/local/bin/{binary}"]
    if entrypoint:
        lines.append("ENTRYPOINT " + str(entrypoint).replace("'", '"'))
    return Image(tag, "\n".join(lines) + "\n", {binary: src / binary})


def workload_images(v: dict[str, str]) -> dict[str, Image]:
    """Images the suites deploy (also baked into the node image)."""
    t = v["HARNESS_TAG"]
    toolbox_df = (config.IMAGES_DIR / "toolbox" / "Dockerfile").read_text()
    return {
        "demoapp": static_image(f"svc-harness/demoapp:{t}", "demoapp", ["/usr/local/bin/demoapp"]),
        "toolbox": Image(f"svc-harness/toolbox:{t}", toolbox_df,
                         {"svc-probe": config.BIN / "svc-probe", "slim.sh": config.IMAGES_DIR / "slim.sh"},
                         build_args={"BASE_IMAGE": base_tag(v)}),
        # MetalLB's manifests (from its Go module) name quay.io images; the harness rewrites them.
        "metallb-controller": static_image(f"svc-harness/metallb-controller:{v['METALLB_VERSION']}",
                                           "metallb-controller", ["/controller"], dest="/controller"),
        "metallb-speaker": static_image(f"svc-harness/metallb-speaker:{v['METALLB_VERSION']}",
                                        "metallb-speaker", ["/speaker"], dest="/speaker"),
    }


def cluster_images(v: dict[str, str]) -> dict[str, Image]:
    """Images kubeadm and kind start, under the references they ask for."""
    k, t, kbin = v["KUBERNETES_VERSION"], v["HARNESS_TAG"], config.version_bin(v)
    netbase = f"svc-harness/netbase:{t}"
    imgs = {}
    for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        imgs[c] = static_image(f"svc-harness/{c}:{k}", c, src=kbin)
        imgs[c].node_ref = f"registry.k8s.io/{c}:{k}"
    imgs["kube-proxy"] = on_base(f"svc-harness/kube-proxy:{k}", netbase, "kube-proxy", src=kbin)
    imgs["kube-proxy"].node_ref = f"registry.k8s.io/kube-proxy:{k}"
    imgs["etcd"] = static_image(f"svc-harness/etcd:{v['ETCD_IMAGE_TAG']}", "etcd", src=kbin)
    imgs["etcd"].node_ref = f"registry.k8s.io/etcd:{v['ETCD_IMAGE_TAG']}"
    imgs["coredns"] = static_image(f"svc-harness/coredns:{v['COREDNS_VERSION']}", "coredns", ["/coredns"],
                                   dest="/coredns", src=kbin)
    imgs["coredns"].node_ref = f"registry.k8s.io/coredns/coredns:{v['COREDNS_VERSION']}"
    imgs["pause"] = static_image(f"svc-harness/pause:{v['PAUSE_IMAGE_TAG']}", "pause", ["/pause"], dest="/pause")
    imgs["pause"].node_ref = f"registry.k8s.io/pause:{v['PAUSE_IMAGE_TAG']}"
    imgs["kindnetd"] = on_base(f"svc-harness/kindnetd:{k}", netbase, "kindnetd", ["/usr/local/bin/kindnetd"], src=kbin)
    return imgs


def base_tag(v: dict[str, str]) -> str:
    return f"{BASE_IMAGE}:{v['DEBIAN_SUITE']}"


def _hash(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, Path):
            if p.is_dir():
                for f in sorted(p.rglob("*")):
                    if f.is_file():
                        h.update(str(f.relative_to(p)).encode())
                        h.update(f.read_bytes())
            elif p.exists() and p.is_relative_to(config.REPO):
                # A file of this repository: by content, since every clone gives it a new mtime.
                h.update(p.name.encode())
                h.update(p.read_bytes())
            elif p.exists():
                # Built binaries: size+mtime is enough and avoids hashing 100 MB files.
                st = p.stat()
                h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        else:
            h.update(str(p).encode())
    return h.hexdigest()[:16]


class Builder:
    def __init__(self, runner: Runner = DEFAULT, force: bool = False):
        self.r = runner
        self.force = force
        self.v = config.versions()
        self.stamps = config.CACHE / "stamps"

    # ---- helpers -------------------------------------------------------
    def image_inputs(self, tag: str) -> str | None:
        """The inputs label of image `tag`; None when the engine has no such image."""
        return self.r.engine(f"inspect image {tag}", lambda c: (c.images.get(tag).labels or {}).get(INPUTS_LABEL, ""),
                             check=False, default=None, timeout=30)

    def fresh(self, tag: str, inputs: str) -> bool:
        return not self.force and self.image_inputs(tag) == inputs

    def docker_build(self, img: Image, inputs: str) -> None:
        with tempfile.TemporaryDirectory(prefix="svc-harness-ctx-") as ctx:
            ctxp = Path(ctx)
            (ctxp / "tmp").mkdir()
            (ctxp / "Dockerfile").write_text(img.dockerfile)
            for name, src in img.files.items():
                if not src.exists():
                    raise BuildError(f"{img.tag}: input {src} is missing (did the Go build step run?)")
                dst = ctxp / name
                if src.is_dir():
                    shutil.copytree(src, dst, symlinks=True)
                else:
                    os.link(src, dst) if src.stat().st_dev == ctxp.stat().st_dev else shutil.copy2(src, dst)
            # The engine's classic builder (the SDK's build API): every engine has it, no buildx plugin.
            self.r.engine(f"build {img.tag} ({INPUTS_LABEL}={inputs})", lambda c: c.images.build(
                path=ctx, tag=img.tag, labels={INPUTS_LABEL: inputs}, buildargs=dict(img.build_args),
                network_mode="bridge", rm=True, forcerm=True), timeout=1800)

    # ---- steps ---------------------------------------------------------
    def preflight(self) -> None:
        if not self.r.engine("ping", lambda c: c.ping(), check=False, default=False, timeout=30):
            raise BuildError("no Docker engine answers: run `scripts/engine-up` (as root) first")
        if not shutil.which("go"):
            raise BuildError("Go toolchain not found on PATH: install Go >= 1.24 to build images offline")

    def debian_base(self) -> str:
        tag = base_tag(self.v)
        inputs = _hash("debootstrap-minbase", self.v["DEBIAN_SUITE"])
        if self.fresh(tag, inputs):
            return tag
        with Step(f"debian base image {tag} (debootstrap)"):
            if not shutil.which("debootstrap"):
                # The package lists may never have been fetched (engine-up skips apt when dockerd exists).
                self.r.run(["apt-get", "update", "-qq"], timeout=600, what="apt-get update (for debootstrap)")
                self.r.run(["apt-get", "install", "-y", "-qq", "debootstrap"], timeout=600,
                           what="installing debootstrap (Debian package source needed)")
            mirror = _debian_mirror()
            with tempfile.TemporaryDirectory(prefix="svc-harness-rootfs-") as root:
                self.r.run(["debootstrap", "--variant=minbase", self.v["DEBIAN_SUITE"], root, mirror],
                           timeout=1200, what=f"debootstrap {self.v['DEBIAN_SUITE']} from {mirror}")
                # Leave no apt caches in the base layer.
                shutil.rmtree(Path(root, "var/cache/apt/archives"), ignore_errors=True)
                tar = Path(root).with_suffix(".tar")
                self.r.run(["tar", "-C", root, "-cf", str(tar), "."], timeout=600)
                try:
                    self._import(tar, tag, inputs, 'CMD ["bash"]')
                finally:
                    tar.unlink(missing_ok=True)
        return tag

    def _import(self, tar: Path, tag: str, inputs: str, *changes: str) -> None:
        """A filesystem tarball as image `tag` (`docker import`), labelled with its inputs."""
        repo, _, version = tag.rpartition(":")
        out = self.r.engine(f"import {tar} as {tag}", lambda c: c.api.import_image(
            src=str(tar), repository=repo, tag=version, changes=[f"LABEL {INPUTS_LABEL}={inputs}", *changes]),
            timeout=600)
        if self.image_inputs(tag) != inputs:  # the import API reports an error in its answer, not as one
            raise BuildError(f"importing {tar} as {tag}: the engine answered {str(out)[-300:]}")

    def work_module(self, b: GoBuild) -> Path:
        """The module folder to build `b` in: images/<module> as it is when nothing is pinned; else a
        copy under the cache whose go.mod requires the pins, one per (module sources, pins), so
        that building another Kubernetes release neither edits the checkout nor invalidates the
        builds of the first."""
        template = config.IMAGES_DIR / b.module
        if not b.pins:
            return template
        work = config.CACHE / "gomod" / f"{b.module}-{_hash(template, sorted(b.pins.items()))}"
        if (work / ".pinned").exists():
            return work
        work.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{b.module}-", dir=work.parent))
        try:
            shutil.copytree(template, tmp, dirs_exist_ok=True)
            self.sync_pins(b, tmp)
            (tmp / ".pinned").write_text(json.dumps(b.pins) + "\n")
            try:
                tmp.rename(work)
            except OSError:  # another run made it meanwhile
                if not (work / ".pinned").exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return work

    def sync_pins(self, b: GoBuild, mod: Path) -> None:
        """Make the module's go.mod require what the pins say (images/versions.env and
        images/kubernetes/v<minor>.env: one place for versions)."""
        gomod = (mod / "go.mod").read_text()
        stale = {p: ver for p, ver in b.pins.items() if f"{p} {ver}" not in gomod}
        if not stale:
            return
        edits = [f"-require={p}@{ver}" for p, ver in stale.items()]
        if "k8s.io/kubernetes" in stale:
            # k8s.io/kubernetes replaces its staging modules (k8s.io/api, ...) with folders of its own,
            # which a module requiring it cannot see: point each at its published twin. The list is
            # the release's own (1.37 added k8s.io/cri-streaming and k8s.io/streaming).
            release = stale["k8s.io/kubernetes"]
            staging = staging_version(release)
            upstream = (module_dir("k8s.io/kubernetes", release, self.r) / "go.mod").read_text()
            for name in staging_modules(upstream) | staging_modules(gomod):
                edits.append(f"-replace={name}={name}@{staging}")
        pins = ", ".join(f"{p}@{ver}" for p, ver in stale.items())
        with Step(f"pinning {pins} in a copy of images/{b.module}/go.mod ({mod})"):
            self.r.run(["go", "mod", "edit", *edits], cwd=str(mod))
            try:
                self.r.run(["go", "mod", "tidy"], cwd=str(mod), timeout=1200, env={"GOFLAGS": "-mod=mod"},
                           what=f"resolving {b.name} at the pinned version")
            except CommandError as e:
                raise BuildError(_explain_go_failure(e)) from e

    def go_binaries(self) -> None:
        self.stamps.mkdir(parents=True, exist_ok=True)
        config.BIN.mkdir(parents=True, exist_ok=True)
        gover = self.r.run(["go", "env", "GOVERSION"]).stdout.strip()
        for b in go_builds(self.v):
            self.go_build(b, gover)

    def go_build(self, b: GoBuild, gover: str = "") -> list[Path]:
        """One Go build, skipped when its module, pins and flags are unchanged; returns its outputs."""
        self.stamps.mkdir(parents=True, exist_ok=True)
        b.out_dir.mkdir(parents=True, exist_ok=True)
        gover = gover or self.r.run(["go", "env", "GOVERSION"]).stdout.strip()
        mod = self.work_module(b)
        # A test binary adds a word to its inputs; plain builds keep the hashes they always had.
        inputs = _hash(mod, gover, b.ldflags, *(["go test -c"] if b.test else []),
                       *[(b.versions or self.v)[k] for k in b.version_keys])
        stamp = self.stamps / b.stamp_name
        if (not self.force and stamp.exists() and stamp.read_text() == inputs
                and all(o.exists() for o in b.outputs())):
            return b.outputs()
        with Step(f"go build {b.name}"):
            with tempfile.TemporaryDirectory(prefix="svc-harness-go-") as out:
                verb = ["test", "-c"] if b.test else ["build"]
                argv = ["go", *verb, "-trimpath", "-ldflags", b.ldflags, "-o", out + "/", *b.packages]
                try:
                    self.r.run(argv, cwd=str(mod), timeout=3600, what=f"go build {b.name}",
                               env={"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"})
                except CommandError as e:
                    raise BuildError(_explain_go_failure(e)) from e
                produced = {p.name: p for p in Path(out).iterdir()}
                if "." in b.rename and len(produced) == 1:  # `go build .` names it after the module
                    produced = {".": next(iter(produced.values()))}
                for name, p in produced.items():
                    move_into(p, b.out_dir / b.rename.get(name, name))
        write_text(stamp, inputs)
        return b.outputs()

    def image(self, img: Image) -> None:
        # A base image, by build argument or named in FROM, counts by its own inputs: a rebuilt
        # base rebuilds what stands on it.
        bases = [*img.build_args.values(), *(b for b in re.findall(r"^FROM\s+(\S+)", img.dockerfile, re.M)
                                             if b != "scratch" and "$" not in b)]
        inputs = _hash(img.dockerfile, sorted(img.build_args.items()), *img.files.values(),
                       *(self.image_inputs(b) or b for b in bases))
        if self.fresh(img.tag, inputs):
            return
        with Step(f"image {img.tag}"):
            self.docker_build(img, inputs)

    def netbase(self) -> None:
        d = config.IMAGES_DIR / "netbase"
        self.image(Image(f"svc-harness/netbase:{self.v['HARNESS_TAG']}", (d / "Dockerfile").read_text(),
                         {"slim.sh": config.IMAGES_DIR / "slim.sh"},
                         build_args={"BASE_IMAGE": base_tag(self.v)}))

    def node_image(self, images: list[Image]) -> str:
        """kind's node image: rootfs from a Dockerfile, then images imported into containerd."""
        v = self.v
        tag = config.node_image_tag()
        kind_files = module_dir("sigs.k8s.io/kind", v["KIND_VERSION"], self.r) / "images" / "base" / "files"
        rootfs = Image(f"svc-harness/node-rootfs:{v['KUBERNETES_VERSION']}",
                       (config.IMAGES_DIR / "node" / "Dockerfile").read_text(), {},
                       build_args={"BASE_IMAGE": base_tag(v), "PAUSE_TAG": v["PAUSE_IMAGE_TAG"]})
        with tempfile.TemporaryDirectory(prefix="svc-harness-nodefiles-") as tmp:
            files, binp = Path(tmp, "files"), Path(tmp, "bin")
            shutil.copytree(kind_files, files, ignore=shutil.ignore_patterns("LICENSES", "containerd-fuse-overlayfs.service"))
            for f in [files, *files.rglob("*")]:  # module cache files are read-only
                if not f.is_symlink():
                    f.chmod(f.stat().st_mode | 0o200)
            shutil.copytree(config.IMAGES_DIR / "node" / "files", files, dirs_exist_ok=True)
            (files / "kind" / "version").write_text(v["KUBERNETES_VERSION"] + "\n")
            cni = files / "kind" / "manifests" / "default-cni.yaml"
            cni.write_text(cni.read_text().replace("KUBERNETES_VERSION", v["KUBERNETES_VERSION"]))
            binp.mkdir()
            for b in ("kubelet", "kubeadm", "kubectl", "crictl"):
                shutil.copy2(config.version_bin(v) / b, binp / b)
            rootfs.files = {"files": files, "bin": binp}
            self.image(rootfs)
        inputs = _hash(self.image_inputs(rootfs.tag), *[(i.tag, self.image_inputs(i.tag), i.node_ref) for i in images])
        if self.fresh(tag, inputs):
            return tag
        with Step(f"node image {tag} (import {len(images)} images into containerd)"):
            self._assemble_node(rootfs.tag, tag, images, inputs)
        return tag

    def _assemble_node(self, rootfs: str, tag: str, images: list[Image], inputs: str) -> None:
        """Import `images` into the containerd of a container of `rootfs`, then commit it as `tag`."""
        name = f"svc-harness-node-build-{os.getpid()}"
        box = self.r.engine(f"run {name} from {rootfs}", lambda c: c.containers.run(
            rootfs, ["infinity"], entrypoint="sleep", name=name, detach=True, privileged=True, network_mode="none",
            labels={config.OWNER_LABEL: "image-build", config.BUILDER_LABEL: json.dumps(Owner.of().to_dict())}))
        try:
            self._in(box, ["containerd"], detach=True)
            _poll(lambda: self._in(box, ["ctr", "version"], check=False) is not None,
                  30, "containerd in the node build container to answer")
            for img in images:
                with tempfile.TemporaryDirectory(prefix="svc-harness-save-") as tmp:
                    # put_archive unpacks a tar, so the saved image goes in as the one file of a tar.
                    saved, outer = Path(tmp, "image.tar"), Path(tmp, "outer.tar")
                    self.r.engine(f"save {img.tag}", lambda c: _save(c, img.tag, saved), timeout=600)
                    with tarfile.open(outer, "w") as t:
                        t.add(saved, arcname="image.tar")
                    with outer.open("rb") as f:
                        self.r.engine(f"copy {img.tag} into {name}", lambda c: box.put_archive("/", f), timeout=600)
                self._in(box, ["ctr", "-n", "k8s.io", "images", "import", "--no-unpack", "--all-platforms", "/image.tar"],
                         what=f"importing {img.tag} into the node's containerd")
                if img.node_ref:
                    src = img.tag if "/" in img.tag.split(":")[0].split("/")[0] else f"docker.io/{img.tag}"
                    self._in(box, ["ctr", "-n", "k8s.io", "images", "tag", "--force", src, img.node_ref])
            self._in(box, ["rm", "-f", "/image.tar"])
            self._in(box, ["pkill", "-x", "containerd"], check=False)
            _poll(lambda: self._in(box, ["pgrep", "-x", "containerd"], check=False) is None, 30, "containerd to stop")
            repo, _, version = tag.rpartition(":")
            self.r.engine(f"commit {name} as {tag}", lambda c: box.commit(repository=repo, tag=version, changes=[
                'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]', "CMD []", f"LABEL {INPUTS_LABEL}={inputs}",
                f"LABEL {config.BUILDER_LABEL}="]), timeout=900)  # the build's process is not the image's
        finally:
            self.r.engine(f"remove {name}", lambda c: box.remove(force=True), check=False)

    def _in(self, box, argv: list[str], detach: bool = False, check: bool = True, what: str = "") -> str | None:
        """Run `argv` in container `box` (the SDK's exec); its output, or None when it failed and
        not `check` (BuildError when `check`)."""
        res = self.r.engine(what or f"exec in {box.name}: {' '.join(argv)}",
                            lambda c: box.exec_run(argv, detach=detach), timeout=600)
        if detach or res.exit_code == 0:
            return "" if detach else res.output.decode(errors="replace")
        if check:
            raise BuildError(f"{what or ' '.join(argv)} in {box.name}: exit {res.exit_code}: "
                             f"{res.output.decode(errors='replace')[-500:]}")
        return None

    def build_all(self) -> str:
        started = time.monotonic()
        self.preflight()
        if self.image_inputs(config.node_image_tag()) is None:
            try:
                config.require_free_space(config.CACHE, config.FREE_GIB_IMAGES, "building the images")
            except config.NoSpace as e:
                raise BuildError(str(e)) from None
        self.debian_base()
        self.go_binaries()
        self.netbase()
        work = workload_images(self.v)
        cl = cluster_images(self.v)
        agnhost = agnhost_image(self.v)
        for img in [*cl.values(), *work.values(), agnhost]:
            self.image(img)
        tag = self.node_image([*cl.values(), *work.values(), agnhost])
        total = time.monotonic() - started
        print(f"images ready: node image {tag}; total {total:.1f}s", file=sys.stderr)
        return tag


def module_dir(path: str, version: str, runner: Runner = DEFAULT) -> Path:
    """A Go module's source in the module cache (downloaded if needed), for files it ships
    (kind's node files, MetalLB's manifests) so that none are copied into this repo."""
    import json
    res = runner.run(["go", "mod", "download", "-json", f"{path}@{version}"], check=False,
                     timeout=600, cwd=tempfile.gettempdir())
    try:
        d = json.loads(res.stdout)
    except ValueError:
        d = {}
    if not res.ok or "Dir" not in d:
        raise BuildError(f"cannot get {path}@{version} from the Go module proxy "
                         f"({d.get('Error') or res.stderr.strip()}); check GOPROXY and network")
    return Path(d["Dir"])


def _debian_mirror() -> str:
    """The host's own Debian mirror, so the build reaches what apt already reaches.

    Third-party sources (e.g. nodesource) sit beside it, so only a URL whose
    path ends in /debian counts.
    """
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            words = p.read_text().split()
        except OSError:
            continue
        for w in words:
            if "://" in w and w.rstrip("/").endswith("/debian"):
                return w
    return "http://deb.debian.org/debian"


def _explain_go_failure(e: CommandError) -> str:
    out = e.result.stderr
    if "dial tcp" in out or "lookup" in out or "proxy.golang.org" in out and "connect" in out:
        return ("Go module proxy unreachable while building; set GOPROXY to a reachable proxy "
                f"or pre-fill the module cache.\n{e}")
    if "unknown revision" in out or "invalid version" in out or "not found" in out or "not available" in out:
        return f"a pinned version is not published; check images/versions.env.\n{e}"
    return str(e)


def _save(client, tag: str, dest: Path) -> None:
    """The engine's `save` of image `tag` into the file `dest`, named `tag` (two releases' identical
    builds, e.g. pause 3.10.1 and 3.10.2, are one image with two tags; `named=True` takes the first)."""
    with dest.open("wb") as f:
        for chunk in client.images.get(tag).save(named=tag):
            f.write(chunk)


def _poll(cond, timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise BuildError(f"timed out after {timeout}s waiting for {what}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=tool_prog("python -m harness.images"), description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["build"])
    ap.add_argument("--force", action="store_true", help="rebuild everything, ignoring caches")
    add_kubernetes_version(ap)
    ap.add_argument("-v", "--verbose", action="store_true", help="log every command")
    a = ap.parse_args(argv)
    use_kubernetes_version(ap, a.kubernetes_version)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO, format="%(message)s")
    try:
        Builder(force=a.force).build_all()
    except (BuildError, CommandError) as e:
        print(f"image build failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
