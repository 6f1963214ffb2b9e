"""The guest's lifecycle, each part a timed step: link, guard, boot, ready, images, shutdown.

    g = Guest()
    g.up()                      # build if needed, link + egress guard, boot, dockerd ready
    g.load_images([...])        # once: the guest's disk keeps them across boots
    runner = g.runner()         # docker/kind through this reach the guest's engine
    g.down()                    # clean halt (mconsole cad -> init stops dockerd), then kill

Network: a host veth pair on a private /30 per guest (Link). The host end has
link.host; UML's vector `raw` transport drives the other end (the `tap`
transport panics this kernel), and the guest's vec0 gets link.guest. The guest
has no default route, and the host drops everything forwarded from the link
(GUARD_COMMENT in FORWARD), so nothing from the guest or its clusters leaves
the machine. Offloads are off on both veth ends: with them on, TCP into the
guest stalls.

Guests are numbered: guest 0 is `svc-harness-guest`, guest i > 0 is
`svc-harness-guest-<i+1>`, each with its own link, disk, credentials and
leases. A UML guest runs one CPU, so a run with several xdist workers gives
each worker a guest of its own (harness.engine.choose) to use the host's
other cores.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .. import config
from ..engine.base import (check_v6_guard, delete_rule, ensure_v6_guard, image_id, remove_containers,
                           remove_v6_guard)
from ..owners import Owner, read_json, write_json
from ..runner import DEFAULT, Runner, Step
from ..waits import Wait, WaitTimeout
from . import mconsole
from .build import CACHE, GUEST_DIR, GuestBuilder

log = logging.getLogger(__name__)

GUEST_NAME = "svc-harness-guest"
MAX_GUESTS = 8      # links 10.253.0.0/30 .. 10.253.0.28/30
LINK_PREFIX = 30
# dockerd listens there with TLS and asks for a client certificate that only the host's harness
# holds (made with each guest disk, see ensure_tls); the guest's own INPUT filter drops the port
# from anything but the host's end of the link (images/guest/init).
DOCKER_PORT = 2376
GUARD_COMMENT = "svc-harness guest egress guard"
GUEST_NICE = -10  # see Guest.prioritise
OFFLOADS = ["tso", "gso", "gro", "tx", "rx", "sg"]


class GuestError(RuntimeError):
    pass


def guest_name(index: int) -> str:
    return GUEST_NAME if index == 0 else f"{GUEST_NAME}-{index + 1}"


@dataclass(frozen=True)
class Link:
    """The veth pair between the host and guest `index`, on 10.253.0.<4 index>/30."""
    index: int = 0

    @property
    def host_if(self) -> str:       # host end (has `host`)
        return f"svcg{self.index}"

    @property
    def uml_if(self) -> str:        # the end UML's raw transport drives
        return f"svcg{self.index}u"

    @property
    def host(self) -> str:
        return f"10.253.0.{4 * self.index + 1}"

    @property
    def guest(self) -> str:
        return f"10.253.0.{4 * self.index + 2}"

    @property
    def guard_rule(self) -> list[str]:
        """Drop everything the host would forward from this link (outside or anywhere else)."""
        return ["FORWARD", "-i", self.host_if, "-m", "comment", "--comment", GUARD_COMMENT, "-j", "DROP"]

    @classmethod
    def of_docker_host(cls, url: str) -> "Link":
        """The link whose guest serves `url` (tcp://10.253.0.<4 i + 2>:port)."""
        try:
            last = int(url.split("://", 1)[-1].rsplit(":", 1)[0].rsplit(".", 1)[1])
        except (IndexError, ValueError):
            raise GuestError(f"not a guest engine's address: {url!r}") from None
        return cls((last - 2) // 4)


@dataclass
class GuestConfig:
    index: int = 0          # which guest (its name, link, disk, credentials)
    # One CPU: with ncpus=2 this 7.2 kernel lost ubd completions under `docker load` (all
    # block tags in flight, jbd2 and containerd stuck in D state, guest idle; seen twice,
    # on tmpfs and on ext4). ncpus>1 also needs seccomp mode (ptrace mode refuses SMP).
    cpus: int = int(os.environ.get("SVC_GUEST_CPUS", "1"))
    # Backed by a file in /dev/shm, touched as the guest uses it (page cache included). Several
    # guests at once each get less (harness.engine.choose); ~4 GB are used with a 2-node cluster.
    mem: str = "10G"
    # The guest's disk lives on the host's disk. On tmpfs (/dev/shm) fsyncs would be free, but
    # tmpfs lacks fallocate's ZERO_RANGE, ubd's WRITE_ZEROES fails, and the guest's block I/O
    # hung for good during the first `docker load` (seen 11:44-11:53: tasks stuck in
    # __blk_mq_alloc_requests, guest idle).
    disk_dir: Path = field(default_factory=lambda: Path(os.environ.get("SVC_GUEST_DISK_DIR", CACHE / "disks")))
    seccomp: bool = os.environ.get("SVC_GUEST_SECCOMP", "on") != "off"
    # Each guest on host CPUs of its own (Guest.pin); SVC_GUEST_PIN=off lets the host scheduler place it.
    pin: bool = os.environ.get("SVC_GUEST_PIN", "on") != "off"
    boot_timeout: float = 60
    ready_timeout: float = 120

    @property
    def name(self) -> str:
        return guest_name(self.index)

    @property
    def link(self) -> Link:
        return Link(self.index)


class Guest:
    def __init__(self, cfg: GuestConfig | None = None, runner: Runner = DEFAULT):
        self.cfg = cfg or GuestConfig()
        self.r = runner
        self.uml_dir = CACHE / "run"
        self.console_log = CACHE / f"{self.cfg.name}.console.log"
        self.marker = CACHE / f"{self.cfg.name}.json"

    # ---- where things are --------------------------------------------
    @property
    def link(self) -> Link:
        return self.cfg.link

    @property
    def docker_host(self) -> str:
        return f"tcp://{self.link.guest}:{DOCKER_PORT}"

    @property
    def tls_dir(self) -> Path:
        """The harness's client credentials for this guest's engine (ca.pem, cert.pem, key.pem)."""
        return CACHE / "tls" / self.cfg.name

    def docker_env(self) -> dict:
        return {"DOCKER_HOST": self.docker_host, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(self.tls_dir)}

    def docker_argv(self) -> list[str]:
        """`docker` with the flags that reach the guest's engine (for a command that also talks to the host's)."""
        t = self.tls_dir
        return ["docker", "--host", self.docker_host, "--tlsverify", "--tlscacert", str(t / "ca.pem"),
                "--tlscert", str(t / "cert.pem"), "--tlskey", str(t / "key.pem")]

    @property
    def pidfile(self) -> Path:
        return self.uml_dir / self.cfg.name / "pid"

    @property
    def mconsole_socket(self) -> Path:
        return self.uml_dir / self.cfg.name / "mconsole"

    def disk(self, rootfs_key: str) -> Path:
        return self.cfg.disk_dir / f"{self.cfg.name}-{rootfs_key}.ext4"

    def runner(self) -> Runner:
        """A Runner whose docker and kind commands reach the guest's engine."""
        return self.r.on_engine(self.docker_env(), where=self.describe())

    def describe(self) -> str:
        # The pinning is part of it: pinned and unpinned guests give different Service-path latencies.
        pinned = f", pinned to host CPU {','.join(map(str, self.host_cpus()))}" if self.cfg.pin else ""
        return f"guest {self.cfg.name} (UML, {self.kernel_release() or 'kernel unknown'}{pinned})"

    def kernel_release(self) -> str:
        try:
            return json.loads(self.marker.read_text()).get("kernel", "")
        except (OSError, ValueError):
            return ""

    # ---- state -----------------------------------------------------------
    def pid(self) -> int | None:
        """The guest's UML process, trusted only if that process is this guest (a pidfile left by a
        killed run or a reboot may name an unrelated process by now)."""
        try:
            pid = int(self.pidfile.read_text().split()[0])
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        return pid if f"umid={self.cfg.name}".encode() in argv else None

    def running(self) -> bool:
        return self.pid() is not None

    def known(self) -> bool:
        """Has this guest ever been made here (it runs, or its disk or marker exists)?"""
        return self.running() or self.marker.exists() or any(self.cfg.disk_dir.glob(f"{self.cfg.name}-*.ext4"))

    def docker_answers(self) -> bool:
        return bool(self.runner().engine("ping", lambda c: c.ping(), check=False, timeout=15))

    # ---- lifecycle -------------------------------------------------------
    def up(self) -> "Guest":
        """Build (cached), link + guard, boot, wait for dockerd; reuse a running guest of ours."""
        art = GuestBuilder(self.r).build_all()
        self.ensure_link()
        self.ensure_guard()
        if self.running():
            # Booted earlier (by this run or another: harness.guest.engine decides about restarts).
            self._wait(f"dockerd in running guest {self.cfg.name} to answer on {self.docker_host}",
                       self.cfg.ready_timeout, self.docker_answers)
            self._record_kernel()
            self.prioritise()
            log.info("reusing running %s", self.describe())
            return self
        self._keep_panic_log()
        disk = self.prepare_disk(art.rootfs, art.rootfs_key)
        with Step(f"guest {self.cfg.name}: boot ({self.cfg.cpus} CPUs, mem {self.cfg.mem}, "
                  f"seccomp {'on' if self.cfg.seccomp else 'off'}, disk {disk.parent})"):
            self.boot(art.kernel, disk)
        with Step(f"guest {self.cfg.name}: dockerd ready on {self.docker_host}"):
            self._wait(f"dockerd in guest {self.cfg.name} to answer on {self.docker_host}",
                       self.cfg.ready_timeout, lambda: self.running() and self.docker_answers())
        swept = self.sweep_stale_nodes()
        if swept:
            log.info("guest %s: removed the nodes of clusters whose runs are gone: %s", self.cfg.name, ", ".join(swept))
        self._record_kernel()
        log.info("guest engine: %s", self.describe())
        return self

    def _keep_panic_log(self) -> Path | None:
        """The console of a boot that ended in a kernel panic, kept beside it before the next boot
        writes over it (the panic is the evidence of why a run's guest went away)."""
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return None
        if "Kernel panic" not in text:
            return None
        kept = self.console_log.with_name(
            f"{self.cfg.name}.panic-{time.strftime('%Y%m%d-%H%M%S', time.localtime(self.console_log.stat().st_mtime))}.log")
        self.console_log.rename(kept)
        line = next(ln for ln in text.splitlines() if "Kernel panic" in ln)
        log.warning("guest %s: its last boot ended in a kernel panic (%s); console kept at %s",
                    self.cfg.name, line.strip(), kept)
        return kept

    def sweep_stale_nodes(self) -> list[str]:
        """Remove kind node containers (and their /var volumes) of clusters whose run is gone.

        Called after a fresh boot: a cluster in the guest stopped with the guest, and dockerd
        restarts kind's nodes (restart policy on-failure) at boot, where an old cluster would keep
        the guest's one CPU busy. A cluster whose marker's owner still lives is left alone."""
        def live(cluster: str) -> bool:
            owner = Owner.from_dict((read_json(config.CACHE / "clusters" / f"{cluster}.json") or {}).get("owner"))
            return bool(owner and owner.alive())

        return remove_containers(self.runner(), config.KIND_CLUSTER_LABEL, volumes=True, timeout=600,
                                 only=lambda x: not live(x.labels.get(config.KIND_CLUSTER_LABEL, "")))

    def _record_kernel(self) -> None:
        """The guest kernel's release, for describe() (the report says where each mode ran)."""
        if self.kernel_release():
            return
        kernel = self.runner().engine("info", lambda c: c.info()["KernelVersion"], check=False, default="")
        state = read_json(self.marker) or {"created_by": "svc-harness", "name": self.cfg.name}
        write_json(self.marker, {**state, "kernel": kernel})

    def ensure_link(self) -> None:
        """The veth pair on a private /30, offloads off on both ends (idempotent)."""
        k = self.link
        if self.r.run(["ip", "link", "show", k.host_if], check=False).ok:
            if f" {k.host}/" in self.r.run(["ip", "-o", "addr", "show", "dev", k.host_if], check=False).stdout:
                return
            # Left half-made (interrupted between creating and addressing it): start over.
            self.r.run(["ip", "link", "del", k.host_if], check=False)
        with Step(f"guest link {k.host_if} {k.host}/{LINK_PREFIX} <-> {k.guest}"):
            self.r.run(["ip", "link", "add", k.host_if, "type", "veth", "peer", "name", k.uml_if],
                       what="creating the guest's veth pair")
            self.r.run(["ip", "addr", "add", f"{k.host}/{LINK_PREFIX}", "dev", k.host_if])
            for dev in (k.host_if, k.uml_if):
                for off in OFFLOADS:
                    self.r.run(["ethtool", "-K", dev, off, "off"], check=False)
                self.r.run(["ip", "link", "set", dev, "up"])

    def ensure_guard(self) -> None:
        ensure_guard(self.link, self.r)

    def prepare_disk(self, rootfs: Path, key: str) -> Path:
        """The guest's own disk: a sparse copy of the built rootfs, kept across boots (images stay)."""
        disk = self.disk(key)
        disk.parent.mkdir(parents=True, exist_ok=True)
        # The disk is sparse: it fills as images and clusters land on it; /dev/shm holds the memory.
        for where, gib, what in ((disk.parent, config.FREE_GIB_GUEST_DISK if not disk.exists() else 4,
                                  "the guest's disk"),
                                 (Path("/dev/shm"), config.FREE_GIB_GUEST_MEMORY, "the guest's memory")):
            try:
                config.require_free_space(where, gib, what)
            except config.NoSpace as e:
                raise GuestError(str(e)) from None
        if not disk.exists():
            with Step(f"guest disk {disk} (sparse copy of the built rootfs)"):
                tmp = disk.with_suffix(".tmp")
                self.r.run(["cp", "--sparse=always", str(rootfs), str(tmp)], timeout=600)
                shutil.rmtree(self.tls_dir, ignore_errors=True)  # a new disk gets new credentials
                tmp.rename(disk)
        server = self.ensure_tls()
        # init, dockerd's config and its TLS files go in at every boot, so changing them needs no rebuild.
        with tempfile.NamedTemporaryFile("w", suffix=".debugfs", delete=False) as f:
            f.write(f"rm /usr/sbin/guest-init\nwrite {GUEST_DIR / 'init'} /usr/sbin/guest-init\n"
                    "set_inode_field /usr/sbin/guest-init mode 0100755\n"
                    f"rm /etc/docker/daemon.json\nwrite {GUEST_DIR / 'daemon.json'} /etc/docker/daemon.json\n"
                    "mkdir /etc/docker/tls\n")
            for name in ("ca.pem", "server-cert.pem", "server-key.pem"):
                f.write(f"rm /etc/docker/tls/{name}\nwrite {server / name} /etc/docker/tls/{name}\n"
                        f"set_inode_field /etc/docker/tls/{name} mode 0100600\n")
        try:
            self.r.run(["debugfs", "-w", "-f", f.name, str(disk)], what="installing guest-init into the guest's disk")
        finally:
            os.unlink(f.name)
        return disk

    def ensure_tls(self) -> Path:
        """A CA, a server certificate for the guest's link address and a client certificate, made once per guest disk.

        The client side (ca.pem, cert.pem, key.pem: DOCKER_CERT_PATH's names) stays in tls_dir,
        readable by its owner only; the server side goes into the guest's disk. Returns the
        directory of the server side."""
        t, server = self.tls_dir, self.tls_dir / "server"
        if (t / "key.pem").exists() and (server / "server-key.pem").exists():
            return server
        shutil.rmtree(t, ignore_errors=True)
        server.mkdir(parents=True, mode=0o700)
        os.chmod(t, 0o700)
        with Step(f"guest {self.cfg.name}: TLS credentials for its engine API ({t})"):
            ossl = ["openssl"]
            key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
            self.r.run([*ossl, "req", "-x509", *key, "-days", "3650", "-subj", f"/CN={self.cfg.name} CA",
                        "-keyout", t / "ca-key.pem", "-out", t / "ca.pem"], what="making the guest engine's CA")
            for who, cn, ext in (("server", self.link.guest, f"subjectAltName=IP:{self.link.guest}\n"
                                                        "extendedKeyUsage=serverAuth\n"),
                                 ("client", "svc-harness", "extendedKeyUsage=clientAuth\n")):
                (t / f"{who}.ext").write_text(ext)
                self.r.run([*ossl, "req", "-new", *key, "-subj", f"/CN={cn}", "-keyout", t / f"{who}-key.pem",
                            "-out", t / f"{who}.csr"], what=f"making the guest engine's {who} key")
                self.r.run([*ossl, "x509", "-req", "-in", t / f"{who}.csr", "-CA", t / "ca.pem", "-CAkey",
                            t / "ca-key.pem", "-CAcreateserial", "-days", "3650", "-extfile", t / f"{who}.ext",
                            "-out", t / f"{who}-cert.pem"], what=f"signing the guest engine's {who} certificate")
            shutil.move(t / "server-key.pem", server / "server-key.pem")
            shutil.move(t / "server-cert.pem", server / "server-cert.pem")
            shutil.copy(t / "ca.pem", server / "ca.pem")
            os.replace(t / "client-cert.pem", t / "cert.pem")
            os.replace(t / "client-key.pem", t / "key.pem")
            for leftover in [*t.glob("*.csr"), *t.glob("*.ext"), *t.glob("*.srl"), t / "ca-key.pem"]:
                leftover.unlink(missing_ok=True)  # no new certificate is ever signed with it
            for f in [*t.glob("*.pem"), *server.glob("*.pem")]:
                os.chmod(f, 0o600)
        return server

    def boot(self, kernel: Path, disk: Path) -> None:
        self.uml_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.uml_dir / self.cfg.name, ignore_errors=True)
        argv = [str(kernel), f"umid={self.cfg.name}", f"uml_dir={self.uml_dir}", f"mem={self.cfg.mem}",
                f"ncpus={self.cfg.cpus}", f"seccomp={'on' if self.cfg.seccomp else 'off'}",
                # noinit_itable: ext4's lazy inode-table zeroing asks for WRITE_ZEROES, which the
                # ubd driver refuses on a tmpfs-backed image (console floods with errors).
                f"ubd0={disk}", "root=/dev/ubda", "rw", "rootflags=noinit_itable",
                f"vec0:transport=raw,ifname={self.link.uml_if},depth=128,gro=0",
                "con=null", "con0=null,fd:1", "init=/usr/sbin/guest-init",
                f"guest.addr={self.link.guest}/{LINK_PREFIX}", f"guest.host={self.link.host}", f"guest.name={self.cfg.name}",
                f"guest.port={DOCKER_PORT}"]
        # setsid -f: the guest outlives this process (xdist workers come and go) and is one
        # process group, so a last-resort kill reaches every host process of the guest.
        # TMPDIR: UML backs the guest's memory with a file there; tmpfs keeps it in RAM.
        self.console_log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.console_log, "w") as log_file:
            log_file.write(" ".join(argv) + "\n")
        self.r.run(["bash", "-c", 'exec setsid -f "$@" </dev/null >>"$LOG" 2>&1', "boot", *argv],
                   env={"TMPDIR": "/dev/shm", "LOG": str(self.console_log)}, what=f"booting guest {self.cfg.name}")
        write_json(self.marker, {"created_by": "svc-harness", "name": self.cfg.name,
                                 "disk": str(disk), "time": time.time()})
        self._wait(f"guest {self.cfg.name} to start init", self.cfg.boot_timeout,
                   lambda: "guest-init: dockerd started" in self.console_log.read_text(errors="replace"))
        self.prioritise()

    def host_cpus(self) -> list[int]:
        """The host CPUs guest `index` is pinned to: its own `cpus` of those this process may use,
        counted from index x cpus (wrapping when there are more guests than CPUs)."""
        allowed = sorted(os.sched_getaffinity(0))
        first = self.cfg.index * self.cfg.cpus
        return sorted({allowed[(first + i) % len(allowed)] for i in range(self.cfg.cpus)})

    def pin(self, pid: int) -> None:
        """Keep the guest's host processes on host_cpus().

        A UML guest switches between its kernel process and its userspace processes on every
        syscall; spread over the host's CPUs, each switch wakes an idle CPU, which costs far more
        in this paravirtual machine than the switch itself. Pinned, a 2-node cluster comes up about
        three times faster on an idle host (docs/ipvs-guest.md). The UML kernel forks the guest's
        processes, so those started later inherit the mask."""
        cpus = self.host_cpus()
        pgid = os.getpgid(pid)
        pinned = 0
        for task in Path("/proc").glob("[0-9]*/task/[0-9]*"):
            try:
                if int((task / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    os.sched_setaffinity(int(task.name), cpus)
                    pinned += 1
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile, or not ours to change
        log.info("guest %s: %d host thread(s) pinned to host CPU(s) %s", self.cfg.name, pinned,
                 ",".join(map(str, cpus)))

    def prioritise(self) -> None:
        """Run the guest's host processes at a higher CPU priority than the host's own clusters.

        The guest's control plane starves first when host clusters run beside it: seen at load
        average 64, its API server's leases and liveness probes timed out, kubelet restarted it, and
        the cluster was lost (connection refused), while host clusters only got slower. The UML
        kernel forks its userspace processes, so they inherit the priority."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.setpriority(os.PRIO_PGRP, os.getpgid(pid), GUEST_NICE)
        except OSError as e:
            log.warning("guest %s: could not raise its CPU priority (nice %d): %s", self.cfg.name, GUEST_NICE, e)
        if self.cfg.pin:
            self.pin(pid)

    def _wait(self, what: str, timeout: float, cond) -> None:
        """Poll cond(); on timeout the error carries the guest console's tail."""
        try:
            Wait(what, timeout=timeout, interval=0.2).until(cond, lambda ok: ok)
        except WaitTimeout as e:
            raise GuestError(f"{e}\n{self._console_tail()}") from None

    def _console_tail(self) -> str:
        try:
            return f"guest console ({self.console_log}):\n" + "\n".join(
                self.console_log.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return f"no guest console log at {self.console_log}"

    def load_images(self, tags: list[str]) -> dict[str, float]:
        """Copy host images into the guest's engine unless it holds the same image ID already."""
        took = {}
        for tag in tags:
            host_id = image_id(self.r, tag)
            if not host_id:
                raise GuestError(f"image {tag} is not on the host engine; build it first "
                                 "(python -m harness.images build)")
            if image_id(self.runner(), tag) == host_id:
                continue
            with Step(f"guest {self.cfg.name}: docker load {tag}") as st:
                # The host engine's `save` stream goes straight into the guest engine's `load`.
                stream = self.r.engine(f"save {tag}", lambda c: c.images.get(tag).save(named=True), timeout=1800)
                self.runner().engine(f"load {tag} into the guest", lambda c: c.images.load(stream), timeout=1800)
            took[tag] = st.seconds
        if took:  # a new build of a tag leaves the old one untagged on the guest's disk
            self.runner().engine("pruning untagged images in the guest",
                                 lambda c: c.images.prune(filters={"dangling": True}), check=False, timeout=600)
        return took

    def down(self, timeout: float = 90) -> None:
        """Clean halt (init stops dockerd, syncs, powers off), then sysrq, then kill."""
        pid = self.pid()
        if pid is None:
            self._unlink()
            return
        with Step(f"guest {self.cfg.name}: shutdown"):
            for how in ("cad", "sysrq s", "sysrq u", "sysrq o"):
                try:
                    mconsole.command(self.mconsole_socket, how)
                except (OSError, mconsole.MconsoleError) as e:
                    log.warning("guest %s: mconsole %s failed: %s", self.cfg.name, how, e)
                wait = timeout if how == "cad" else 5
                if self._exited(pid, wait):
                    break
            else:
                log.warning("guest %s did not halt; killing its process group %d", self.cfg.name, pid)
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
                self._exited(pid, 10)
        self._unlink()

    def _exited(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                return True
            time.sleep(0.2)
        return False

    def _unlink(self) -> None:
        self.marker.unlink(missing_ok=True)

    def remove_link(self) -> None:
        """Delete the veth pair and the guard rule (only once no guest runs)."""
        if self.running():
            raise GuestError(f"guest {self.cfg.name} still runs; shut it down first")
        self.r.run(["ip", "link", "del", self.link.host_if], check=False)
        delete_rule(self.r, self.link.guard_rule)
        remove_v6_guard(self.r, self.link.host_if)


# ---- the egress guard of a guest's link (harness.engine calls these for a guest engine)
def ensure_guard(link: Link, runner: Runner = DEFAULT) -> str:
    """Drop everything the host would forward from the guest's link (outside or anywhere else)."""
    if not runner.run(["iptables", "-C", *link.guard_rule], check=False).ok:
        runner.run(["iptables", "-I", *link.guard_rule], what="installing the guest egress guard")
    ensure_v6_guard(runner, link.host_if)
    return " ".join(link.guard_rule)


def check_guard(link: Link, runner: Runner = DEFAULT) -> None:
    if not runner.run(["iptables", "-C", *link.guard_rule], check=False).ok:
        raise GuestError(f"guest egress guard missing: expected `iptables -I {' '.join(link.guard_rule)}`; "
                         "refusing to send traffic without it")
    check_v6_guard(runner, link.host_if)


def guard_drops(link: Link, runner: Runner = DEFAULT) -> int:
    res = runner.run(["iptables", "-L", "FORWARD", "-v", "-x", "-n"], check=False)
    return sum(int(line.split()[0]) for line in res.stdout.splitlines()
               if f"/* {GUARD_COMMENT} */" in line and len(line.split()) > 5 and line.split()[5] == link.host_if)


# ---- kind clusters on the guest's engine
GUEST_CREATE_TIMEOUT = 1500
GUEST_IPVS_SYNC_PERIOD = "10m0s"   # see kind_tuning
GUEST_RUNTIME_REQUEST_TIMEOUT = "15m0s"  # see kind_tuning
# The control plane's own requests (850m) plus this fit the guest's one CPU; see kind_tuning.
GUEST_KUBE_PROXY_CPU = "100m"


def kind_tuning(cluster_name: str, workers: int, kubernetes: str = "", link: Link = Link()) -> dict:
    """render_kind_config's engine_tuning for a cluster in the guest.

    The API server is published on the guest's link address (the host's
    kubectl reaches it there; 127.0.0.1 would be the guest's own loopback), on
    a port derived from the name so two clusters in one guest do not collide.
    The control plane of a slow machine needs: no leader election (its 5 s
    lease renewals fail under load and the controller-manager restarts), and
    kubeadm's wait for the control plane longer than its 4 minutes. With one
    worker, the control plane takes pods too (no taint), so pods still spread over
    more than one node; with two, the shape is the host clusters'. (A 1-node cluster is kind's own
    business: kind removes that taint itself and fails if it is already gone.)

    Two settings cut the guest's steady load without changing what a test sees.
    etcd skips fsync (each one crosses the guest's block driver to the host's
    disk; the cluster is thrown away after the run). kube-proxy's periodic ipvs
    resync is 10 minutes instead of 30 s: one full sync execs ipset and
    iptables-restore some 40 times and took ~35 s in the guest, so with the 30 s
    default each node's kube-proxy resynced back to back for ever. Syncs on a
    change (a new Service, endpoints, a restart) are not affected.

    kubelet waits up to 15 minutes for a container runtime call instead of 2: unpacking
    an image layer into containerd's snapshots took longer than 2 minutes in a second
    cluster beside the first (E16's), so CreateContainer for kube-proxy and kindnet hit
    "context deadline exceeded", the half-done unpack was thrown away, and each retry
    started over (seen for 12 minutes: the node never got Ready).

    kube-proxy gets a CPU request (GUEST_KUBE_PROXY_CPU). kubeadm's DaemonSet has none, so
    it is a BestEffort pod, and on a CPU-bound node BestEffort gets almost no CPU beside the
    control plane's Burstable pods: a sync took 18.6 s on average on the control-plane node
    against 4.7 s on the worker (kube-proxy's own metrics, same guest, same Services).
    """
    port = 16443 + zlib.crc32(cluster_name.encode()) % 1000
    kubernetes = kubernetes or config.versions()["KUBERNETES_VERSION"]
    # kind writes kubeadm.k8s.io/v1beta4 from Kubernetes 1.36 on, where the wait for the control
    # plane moved from ClusterConfiguration.apiServer to InitConfiguration.timeouts.
    v1beta4 = config.minor_of(kubernetes) >= (1, 36)
    # kubernetesAPICall bounds kubeadm's own API writes (the admin ClusterRoleBinding, ConfigMaps,
    # tokens): its 1 minute ran out while host clusters started beside the guest.
    wait = ("kind: InitConfiguration\ntimeouts:\n  controlPlaneComponentHealthCheck: 20m0s\n"
            "  kubeletHealthCheck: 20m0s\n  kubernetesAPICall: 10m0s\n") if v1beta4 else ""
    patch = ("kind: ClusterConfiguration\n"
             + ("" if v1beta4 else "apiServer:\n  timeoutForControlPlane: 20m0s\n") +
             "controllerManager:\n  extraArgs:\n    leader-elect: \"false\"\n"
             "scheduler:\n  extraArgs:\n    leader-elect: \"false\"\n"
             "etcd:\n  local:\n    extraArgs:\n      unsafe-no-fsync: \"true\"\n")
    untaint = "kind: InitConfiguration\nnodeRegistration:\n  taints: []\n"
    proxy = (f"kind: KubeProxyConfiguration\nipvs:\n  syncPeriod: {GUEST_IPVS_SYNC_PERIOD}\n")
    kubelet = f"kind: KubeletConfiguration\nruntimeRequestTimeout: {GUEST_RUNTIME_REQUEST_TIMEOUT}\n"
    return {"networking": {"apiServerAddress": link.guest, "apiServerPort": port},
            "kubeadm_patches": [patch] + ([wait] if wait else []) + ([untaint] if workers == 1 else []) + [proxy, kubelet],
            "kube_proxy_cpu_request": GUEST_KUBE_PROXY_CPU}
