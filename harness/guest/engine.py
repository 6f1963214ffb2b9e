"""The UML guest as an Engine (harness.engine): a machine-wide resource shared by runs.

Every run that uses the guest holds a lease on it (harness.owners.Leases under
CACHE/guest/leases): the first boots it, the last one out halts it and removes
its link and guard. Booting, loading images and halting happen behind the
leases' lock, so two runs never boot, load into or halt the guest at once, and
a run never halts a guest another live run still uses.
"""
from __future__ import annotations

import logging

from .. import config
from ..engine.base import GUARD_COMMENT, Engine, Shape, ensure_kind_network, image_id, saved_rules
from ..owners import Leases, Owner, cluster_markers
from ..runner import DEFAULT, Runner
from . import vm
from .build import CACHE, GuestBuilder

log = logging.getLogger(__name__)



def leases_of(name: str) -> Leases:
    """The runs holding guest `name` (one file each)."""
    return Leases(CACHE / "leases" / name)


class GuestEngine(Engine):
    kind = "guest"
    per_slot = True
    # Every wait of a test on a guest cluster is this many times longer: kube-proxy syncs took
    # ~35 s and a new Service reached IPVS 30-138 s after its pods, against ~1 s on the host.
    slowdown = config.GUEST_SLOWDOWN
    create_timeout = vm.GUEST_CREATE_TIMEOUT
    smallest_workers = 0    # kind's own 1-node cluster (untainted by kind)

    def __init__(self, runner: Runner | None = None, guest: vm.Guest | None = None, workers: int = 1,
                 index: int = 0, mem: str = ""):
        self.guest = guest or vm.Guest(vm.GuestConfig(index=index, **({"mem": mem} if mem else {})))
        super().__init__(runner or self.guest.runner())
        self.leases = leases_of(self.guest.cfg.name)
        self.workers = workers  # --guest-worker-nodes: the guest's own cluster size, whatever --worker-nodes says

    def describe(self) -> str:
        return self.guest.describe()

    def down_and_self_cleaning(self) -> bool:
        return not self.guest.running()  # its next boot removes dead runs' nodes (Guest.sweep_stale_nodes)

    def marker(self) -> dict:
        return {"engine": self.kind, "guest": self.guest.cfg.name, "index": self.guest.cfg.index}

    @property
    def cluster_suffix(self) -> str:
        from ..engine import cluster_suffix
        return cluster_suffix(self.guest.cfg.index)

    def unavailable_reason(self, mode: str) -> str | None:
        from ..engine.base import ipvs_missing_reason
        a = GuestBuilder().paths()
        absent = [str(p) for p in (a.kernel, a.rootfs) if not p.exists()]
        if absent:
            why = ipvs_missing_reason() or "--ipvs-engine=guest"
            return (f"{mode} runs in the UML guest engine here ({why}), but the guest is not built "
                    f"({', '.join(absent)} missing): run `python -m harness.guest build` (scripts/setup does it)")
        return None

    def shape(self, cluster_name: str, workers: int) -> Shape:
        workers = min(workers, self.workers)  # asked for the smallest: 0; else the guest's own size
        note = ""
        if workers + 1 < 3:
            note = (f"{workers + 1} node(s), not 3: a kind cluster inside the UML guest is CPU-bound "
                    f"(every syscall is trapped), and the third node made the whole ipvs set about 3 min longer "
                    f"(docs/ipvs-guest.md); --guest-worker-nodes=2 gives the host's shape. Its control plane is "
                    f"untainted, so pods spread over both nodes")
        return Shape(workers, vm.kind_tuning(cluster_name, workers, link=self.guest.link), note)

    def up(self, run_key: str, images: list[str], owner: Owner | None = None) -> dict[str, float]:
        """Lease the guest for `run_key`: boot it unless it runs and answers, then load `images`."""
        with self.leases.locked():
            others = {k: o for k, o in self.leases.live().items() if k != run_key}
            self.leases.add(run_key, owner or Owner.of())  # before boot: a half-booted guest is ours to halt
            if self.guest.running() and not self.guest.docker_answers() and not others:
                log.warning("guest %s runs but its engine does not answer, and no live run holds it: restarting it",
                            self.guest.cfg.name)
                self.guest.down()
            if others and self.guest.running():
                log.info("guest %s is shared with %d other run(s): %s", self.guest.cfg.name, len(others),
                         ", ".join(f"{k} ({o})" for k, o in others.items()))
            self.guest.up()
            return self.guest.load_images([t for t in dict.fromkeys(images) if _on_host(t)])

    def release(self, run_key: str, keep: bool = False) -> list[str]:
        """Drop this run's lease; the last holder halts the guest and removes its link and guard."""
        with self.leases.locked():
            self.leases.remove(run_key)
            others = self.leases.live()
            if others:
                return [f"svc-harness: guest engine left running for {len(others)} other run(s)"]
            if keep:
                return ["svc-harness: guest engine kept running (--keep-clusters); "
                        "`python -m harness.guest down` halts it"]
            self._halt()
            return []

    def halt_if_idle(self) -> bool:
        with self.leases.locked():
            if not self.guest.running() or self.leases.live() or self._clusters_recorded():
                return False
            log.info("guest %s: no run holds it and no cluster of ours is on it: halting it", self.guest.cfg.name)
            self._halt()
            return True

    def _clusters_recorded(self) -> list[str]:
        """Clusters whose ownership marker names this guest (a kept one keeps the guest up)."""
        return [name for name, m in cluster_markers() if (m or {}).get("guest") == self.guest.cfg.name]

    def _halt(self) -> None:
        """Halt the guest and remove its link and guard (the caller holds the leases' lock)."""
        self.guest.down()
        self.guest.remove_link()

    def status_lines(self) -> list[str]:
        holders = self.leases.live()
        host_if = self.guest.link.host_if
        link = DEFAULT.run(["ip", "-o", "addr", "show", "dev", host_if], check=False)
        rules = [r for r in saved_rules(DEFAULT, (vm.GUARD_COMMENT,), ("iptables-save",)) if f"-i {host_if} " in r]
        return [f"{self.describe()}: {'running' if self.guest.running() else 'not running'}"
                + (f"; held by {', '.join(f'{k} ({o})' for k, o in holders.items())}" if holders else ""),
                f"{self.describe()}: link {host_if}: "
                + (" ".join(link.stdout.split()[1:4]) if link.ok else "absent"),
                f"{self.describe()}: guard rules on the host: {len(rules)}", *(f"  {r}" for r in rules)]

    def clean_up(self, force: bool) -> tuple[list[str], int]:
        with self.leases.locked():
            holders = self.leases.live()
            if holders and not force:
                return [f"kept the guest engine: held by {', '.join(holders)}"], 1
            lines = ["halted the guest engine"] if self.guest.running() else []
            self._halt()
            return lines, 0

    def api_addresses(self) -> list[str]:
        return [self.guest.link.guest, *super().api_addresses()]

    def api_url(self) -> str | None:
        return f"https://{self.guest.link.guest}:{vm.DOCKER_PORT}/version"

    def api_credentials(self) -> list[str]:
        t = self.guest.tls_dir
        return ["--cacert", str(t / "ca.pem"), "--cert", str(t / "cert.pem"), "--key", str(t / "key.pem")]

    def ensure_guard(self, network: str = config.KIND_NETWORK) -> str:
        ensure_kind_network(self.runner, network)  # the guest engine's own, with an explicit subnet
        return vm.ensure_guard(self.guest.link, self.runner)  # the host's rule on the guest's link

    def check_guard(self, network: str = config.KIND_NETWORK) -> None:
        vm.check_guard(self.guest.link, self.runner)

    def guard_drops(self, comment: str = GUARD_COMMENT) -> int:
        return vm.guard_drops(self.guest.link, self.runner) if comment == GUARD_COMMENT else 0

    def guard_report(self, before: list[int]) -> str:
        drops = self.guard_drops() - (before or [0])[0]
        return (f"svc-harness: guest egress guard dropped {drops} packets forwarded from {self.guest.cfg.name}'s "
                f"link {self.guest.link.host_if} during this run (expected 0)")


def _on_host(tag: str) -> bool:
    return bool(image_id(DEFAULT, tag))
