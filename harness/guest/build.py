"""Offline, cached build of the guest: a UML kernel and an ext4 root filesystem.

    python -m harness.guest build [--force]

Both come from Debian packages only (the kernel from the pinned
`linux-source-*` package, the rootfs by debootstrap), are keyed by the hash of
their inputs (images/versions.env lines, images/guest/*) and live under
~/.cache/svc-harness/guest/. The kernel build is heavy (`make` 322-525 s on 2 cores, see docs/ipvs-guest.md) and
runs under `flock /tmp/svc-heavy.lock` so it never competes with another heavy
build on this machine.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import config
from ..images import BuildError, _debian_mirror, _hash
from ..runner import DEFAULT, Runner, Step

log = logging.getLogger(__name__)

GUEST_DIR = config.IMAGES_DIR / "guest"
FRAGMENT = GUEST_DIR / "uml.config"
PATCHES = sorted(GUEST_DIR.glob("*.patch"))
CACHE = config.CACHE / "guest"
HEAVY_LOCK = "/tmp/svc-heavy.lock"
# Bump when the recipe below changes in a way the inputs do not show.
RECIPE = "2"
# Options the guest cannot work without: the build fails if the merged config lacks one.
REQUIRED = ["CONFIG_IP_VS", "CONFIG_IP_VS_RR", "CONFIG_IP_VS_WRR", "CONFIG_IP_VS_LC", "CONFIG_IP_VS_WLC",
            "CONFIG_IP_VS_SH", "CONFIG_IP_VS_DH", "CONFIG_IP_VS_SED", "CONFIG_IP_VS_NQ", "CONFIG_IP_VS_NFCT",
            "CONFIG_NETFILTER_XT_MATCH_IPVS", "CONFIG_IP_SET", "CONFIG_NF_TABLES", "CONFIG_IP_NF_NAT",
            "CONFIG_BRIDGE_NETFILTER", "CONFIG_VETH", "CONFIG_OVERLAY_FS", "CONFIG_CGROUPS", "CONFIG_MEMCG",
            "CONFIG_CPUSETS", "CONFIG_UML_NET_VECTOR", "CONFIG_BLK_DEV_UBD", "CONFIG_SECCOMP", "CONFIG_SMP"]
# Options the guest must not have: hostfs would let anything with root in the guest (a privileged
# container started through its engine) mount the host's whole filesystem.
FORBIDDEN = ["CONFIG_HOSTFS"]


@dataclass
class Artifacts:
    kernel: Path      # the UML kernel, an ordinary host executable
    rootfs: Path      # pristine ext4 image (the guest's disk starts as a copy)
    kernel_key: str
    rootfs_key: str


def kernel_key(v: dict[str, str]) -> str:
    return _hash("uml-kernel", RECIPE, v["GUEST_KERNEL_SUITE"], v["GUEST_KERNEL_SOURCE"],
                 v["GUEST_KERNEL_SOURCE_VERSION"], FRAGMENT.read_text(), *[p.read_text() for p in PATCHES])


def rootfs_key(v: dict[str, str]) -> str:
    # init and daemon.json are not inputs: vm.py writes them into the guest's disk at each boot.
    return _hash("guest-rootfs", RECIPE, v["DEBIAN_SUITE"], v["GUEST_ROOTFS_PACKAGES"], v["GUEST_DISK_GB"])


class GuestBuilder:
    def __init__(self, runner: Runner = DEFAULT, force: bool = False):
        self.r = runner
        self.force = force
        self.v = config.versions()

    def paths(self) -> Artifacts:
        kk, rk = kernel_key(self.v), rootfs_key(self.v)
        return Artifacts(CACHE / f"kernel-{kk}" / "linux", CACHE / f"rootfs-{rk}.ext4", kk, rk)

    def build_all(self, only: str | None = None) -> Artifacts:
        CACHE.mkdir(parents=True, exist_ok=True)
        self._tools()
        a = self.paths()
        if self.force or not (a.kernel.exists() and a.rootfs.exists()):
            try:
                config.require_free_space(CACHE, config.FREE_GIB_GUEST_BUILD, "building the ipvs guest")
            except config.NoSpace as e:
                raise BuildError(str(e)) from None
        if only in (None, "kernel") and (self.force or not a.kernel.exists()):
            self.kernel(a)
        if only in (None, "rootfs") and (self.force or not a.rootfs.exists()):
            self.rootfs(a)
        return a

    # ---- the kernel ----------------------------------------------------
    def _apt(self) -> list[str]:
        """apt options for a private package list of the kernel's suite (the host's stays untouched)."""
        d = CACHE / "apt"
        for sub in ("lists/partial", "archives/partial"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        src = d / "sources.list"
        src.write_text(f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                       f"{_debian_mirror()} {self.v['GUEST_KERNEL_SUITE']} main\n")
        return ["-o", f"Dir::Etc::sourcelist={src}", "-o", "Dir::Etc::sourceparts=-",
                "-o", f"Dir::State::Lists={d / 'lists'}", "-o", f"Dir::Cache={d}",
                "-o", f"Dir::Cache::archives={d / 'archives'}", "-o", "APT::Sandbox::User=root"]

    def source_deb(self) -> Path:
        pkg, ver = self.v["GUEST_KERNEL_SOURCE"], self.v["GUEST_KERNEL_SOURCE_VERSION"]
        dest = CACHE / "src"
        dest.mkdir(parents=True, exist_ok=True)
        pattern = f"{pkg}_{ver.replace(':', '%3a')}_*.deb"  # this version's, never an older cached one
        found = sorted(dest.glob(pattern))
        if found:
            return found[0]
        opts = self._apt()
        with Step(f"download {pkg}={ver} ({self.v['GUEST_KERNEL_SUITE']})"):
            self.r.run(["apt-get", *opts, "update", "-qq"], timeout=600,
                       what=f"apt-get update for Debian {self.v['GUEST_KERNEL_SUITE']}")
            res = self.r.run(["apt-get", *opts, "download", f"{pkg}={ver}"], cwd=str(dest), timeout=1200,
                             check=False)
            if not res.ok:
                raise BuildError(f"cannot download {pkg}={ver} from Debian {self.v['GUEST_KERNEL_SUITE']} "
                                 f"(is the pinned version still published? `apt-cache policy {pkg}` with that "
                                 f"suite shows what is); set GUEST_KERNEL_SOURCE_VERSION in images/versions.env."
                                 f"\n{res.stderr[-1500:]}")
        found = sorted(dest.glob(pattern))
        if not found:
            raise BuildError(f"apt-get download {pkg}={ver} left no {pattern} in {dest}")
        return found[0]

    def kernel(self, a: Artifacts) -> None:
        deb = self.source_deb()
        work = CACHE / "build" / f"kernel-{a.kernel_key}"
        configured = work / "configured"
        if configured.exists() and not self.force:
            # An interrupted build resumes: same inputs (the key), and make is incremental.
            src = next(p for p in work.iterdir() if p.name.startswith("linux-source-"))
        else:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            src = self._configure(deb, work)
            configured.touch()
        jobs = os.environ.get("SVC_HARNESS_BUILD_JOBS") or str(os.cpu_count() or 2)
        with Step(f"UML kernel build (make -j{jobs}, under {HEAVY_LOCK})"):
            self.r.run(["flock", HEAVY_LOCK, "make", "ARCH=um", f"-j{jobs}", "linux"],
                       cwd=str(src), timeout=7200, what="building the UML kernel")
        out = a.kernel.parent
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copy2(src / "linux", tmp / "linux")
        shutil.copy2(src / ".config", tmp / "config")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        shutil.rmtree(work, ignore_errors=True)

    def _configure(self, deb: Path, work: Path) -> Path:
        with Step(f"UML kernel {self.v['GUEST_KERNEL_SOURCE_VERSION']} (unpack, patch, configure)"):
            self.r.run(["dpkg-deb", "-x", str(deb), str(work / "deb")], timeout=600)
            tarball = next((work / "deb" / "usr" / "src").glob("linux-source-*.tar.*"))
            self.r.run(["tar", "-C", str(work), "-xf", str(tarball)], timeout=1200, what="unpacking the kernel source")
            shutil.rmtree(work / "deb")
            src = next(p for p in work.iterdir() if p.name.startswith("linux-source-"))
            for patch in PATCHES:
                self.r.run(["patch", "-p1", "--forward", "-i", str(patch)], cwd=str(src), what=f"applying {patch.name}")
            self.r.run(["make", "ARCH=um", "defconfig"], cwd=str(src), timeout=600, what="make ARCH=um defconfig")
            self.r.run(["scripts/kconfig/merge_config.sh", "-m", ".config", str(FRAGMENT)], cwd=str(src),
                       env={"ARCH": "um"}, timeout=600, what="merging images/guest/uml.config")
            self.r.run(["make", "ARCH=um", "olddefconfig"], cwd=str(src), timeout=600)
            cfg = (src / ".config").read_text()
            missing = [o for o in REQUIRED if f"{o}=y\n" not in cfg]
            if missing:
                raise BuildError(f"the merged kernel config lacks {missing}: a dependency of "
                                 f"images/guest/uml.config is off (see {src / '.config'})")
            present = [o for o in FORBIDDEN if f"{o}=y\n" in cfg]
            if present:
                raise BuildError(f"the merged kernel config has {present}, which the guest must not have "
                                 f"(see {src / '.config'})")
        return src

    # ---- the root filesystem -------------------------------------------
    def rootfs(self, a: Artifacts) -> None:
        root = CACHE / "build" / f"rootfs-{a.rootfs_key}"
        shutil.rmtree(root, ignore_errors=True)
        root.parent.mkdir(parents=True, exist_ok=True)
        suite = self.v["DEBIAN_SUITE"]
        with Step(f"guest rootfs: debootstrap {suite} + {self.v['GUEST_ROOTFS_PACKAGES']}"):
            self.r.run(["debootstrap", "--variant=minbase", f"--include={self.v['GUEST_ROOTFS_PACKAGES']}",
                        suite, str(root), _debian_mirror()], timeout=1800, what=f"debootstrap {suite}")
            shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
            (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
            (root / "etc/docker").mkdir(parents=True, exist_ok=True)
            (root / "etc/hostname").write_text("svc-harness-guest\n")
            (root / "etc/resolv.conf").unlink(missing_ok=True)
            (root / "etc/resolv.conf").write_text("# the guest has no route out: no resolver\n")
            (root / "etc/fstab").write_text("/dev/ubda / ext4 rw,noatime 0 1\n")
        with Step(f"guest disk image ({self.v['GUEST_DISK_GB']} GB sparse ext4)"):
            tmp = a.rootfs.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            self.r.run(["mkfs.ext4", "-q", "-F", "-L", "guestroot", "-E", "lazy_itable_init=1,lazy_journal_init=1",
                        "-d", str(root), str(tmp), f"{self.v['GUEST_DISK_GB']}G"], timeout=1800,
                       what="making the guest's ext4 image")
            tmp.rename(a.rootfs)
        shutil.rmtree(root, ignore_errors=True)

    def _tools(self) -> None:
        """Build tools from the host's Debian (the kernel needs flex/bison; the rootfs debootstrap)."""
        need = [p for p, exe in (("flex", "flex"), ("bison", "bison"), ("debootstrap", "debootstrap"),
                                 ("make", "make"), ("gcc", "gcc"), ("bc", "bc"), ("patch", "patch"),
                                 ("e2fsprogs", "mkfs.ext4"), ("ethtool", "ethtool"))
                if not shutil.which(exe)]
        if need:
            self.r.run(["apt-get", "update", "-qq"], timeout=600, what="apt-get update (guest build tools)")
            self.r.run(["apt-get", "install", "-y", "-qq", *need], timeout=900, what=f"installing {need}")
