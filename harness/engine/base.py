"""The Engine interface, the host's engine, the kind network and the host's egress guard.

The egress guard keeps every packet of the suites on this machine: a rule in
Docker's DOCKER-USER chain drops anything forwarded from the kind network's
bridge to the host's outside interface. Traffic between nodes, containers and
the host never crosses that path, so the rule's drop counter must stay 0.
"""
from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import config
from ..runner import DEFAULT, Runner

log = logging.getLogger(__name__)

GUARD_COMMENT = "svc-harness egress guard"
# Values of config.OWNER_LABEL on the containers the harness starts beside clusters.
CONTAINER_ROLES = ("external-client", "node-sidecar")
DNS_COMMENT = "svc-harness dns guard"


class PreflightError(RuntimeError):
    pass


def engine_ready(runner: Runner = DEFAULT) -> None:
    if not runner.engine("ping", lambda c: c.ping(), check=False, timeout=30):
        raise PreflightError("no Docker engine answers `docker info`; start one with "
                             f"`sudo {config.SCRIPTS / 'engine-up'}` (installs and starts dockerd where needed)")


def ipvs_missing_reason(proc: Path = Path("/proc"), modules: Path = Path("/lib/modules")) -> str | None:
    """Why kube-proxy's ipvs mode cannot run on this kernel, or None if it can.

    IPVS is usable when the kernel has it built in or loaded (/proc/net/ip_vs)
    or can load it (an ip_vs module for the running kernel).
    """
    if (proc / "net" / "ip_vs").exists():
        return None
    release = os.uname().release
    for ext in ("ko", "ko.xz", "ko.zst", "ko.gz"):
        if (modules / release / "kernel" / "net" / "netfilter" / "ipvs" / f"ip_vs.{ext}").exists():
            return None
    return (f"kernel {release} has no IPVS (no /proc/net/ip_vs and no ip_vs module under "
            f"{modules / release}); kube-proxy's ipvs mode cannot run here. Use iptables or nftables, "
            f"or a host whose kernel has CONFIG_IP_VS")


@dataclass
class Shape:
    """What a cluster looks like on an engine: its workers, kind/kubeadm tuning and why it differs."""
    workers: int
    tuning: dict = field(default_factory=dict)   # render_kind_config's engine_tuning
    note: str = ""                                # for the report, when it differs from what was asked


class Engine:
    """A Docker engine that runs kind nodes, like kind's node provider.

    It owns how to reach it (`runner`: docker and kind through it reach this engine), its
    lifecycle for a run (`up` / `release`), the egress guard of the networks it serves, the shape
    of cluster it can carry and how much slower than the host its clusters are (`slowdown`, a
    factor on every wait of a test on its cluster). `choose` picks one per mode; a cluster's
    ownership marker records `marker()`, and `from_marker` rebuilds the engine from it.
    """
    kind = "?"
    slowdown = 1.0
    create_timeout: float = config.CLUSTER_CREATE_TIMEOUT
    smallest_workers = 1    # the smallest cluster that still has a node without the control plane
    cluster_suffix = ""     # appended to a run's cluster name on this engine (one cluster per engine and mode)
    per_slot = False        # one engine per guest slot (--guests), so each slot has a cluster of the mode

    def __init__(self, runner: Runner = DEFAULT):
        self.runner = runner

    def describe(self) -> str:
        raise NotImplementedError

    def marker(self) -> dict:
        return {"engine": self.kind}

    def unavailable_reason(self, mode: str) -> str | None:
        """Why kube-proxy cannot run in `mode` on this engine, or None if it can (the preflight)."""
        return None

    def shape(self, cluster_name: str, workers: int) -> Shape:
        return Shape(workers)

    def up(self, run_key: str, images: list[str], owner=None) -> dict[str, float]:
        """Make the engine usable for the run `run_key` (owned by `owner`, harness.owners); returns
        seconds per image it had to load."""
        engine_ready(self.runner)
        return {}

    def release(self, run_key: str, keep: bool = False) -> list[str]:
        """The run is done with the engine; returns lines for the run's summary."""
        return []

    def halt_if_idle(self) -> bool:
        """Stop the engine when no live run leases it and no cluster of ours is recorded on it
        (a tool that kept clusters across its runs calls this once it deleted them). The host's
        engine is never stopped."""
        return False

    def cgroup_version(self) -> int:
        """The cgroup version the engine's containers (and so kind's kubelets) run on: 1 or 2."""
        info = self.runner.engine("engine info", lambda c: c.info(), check=False, default={}) or {}
        return int(info.get("CgroupVersion") or 2)

    def down_and_self_cleaning(self) -> bool:
        """True when the engine is not running and, when it next starts, removes the nodes of
        clusters whose run is gone: then `clean` need only drop the harness's files of such a cluster."""
        return False

    def ensure_guard(self, network: str = config.KIND_NETWORK) -> str:
        raise NotImplementedError

    def check_guard(self, network: str = config.KIND_NETWORK) -> None:
        raise NotImplementedError

    def guard_drops(self, comment: str = GUARD_COMMENT) -> int:
        raise NotImplementedError

    def guard_counters(self) -> list[int]:
        """The guard's counters, for guard_report's difference."""
        return [self.guard_drops()]

    def guard_report(self, before: list[int]) -> str:
        """What the guard stopped since `before` (guard_counters), for the run's summary."""
        drops = self.guard_drops() - (before or [0])[0]
        return f"svc-harness: egress guard of the {self.kind} engine dropped {drops} packets during this run (expected 0)"

    def remove_guard_if_unused(self, network: str = config.KIND_NETWORK) -> bool:
        """Remove the guard once no container is left on the network it covers; True if removed."""
        return False

    def status_lines(self) -> list[str]:
        """What of the harness this engine holds now (`svc-harness status`)."""
        return []

    def clean_up(self, force: bool) -> tuple[list[str], int]:
        """After the clusters: remove what of the harness is left on this engine and no live run
        holds (`force`: also what live runs hold); (lines to print, how many things were kept)."""
        return [], 0

    # Docker's API ports (plain, TLS). The engine runs the nodes as root: a cluster that could reach
    # its API could start a privileged container on the engine's machine.
    API_PORTS = (2375, 2376)

    def api_addresses(self) -> list[str]:
        """Where the cluster's nodes see the machine this engine runs on (an open API would answer there)."""
        return [kind_gateway(self.runner)]

    def api_url(self) -> str | None:
        """The engine's TCP API as the harness reaches it, or None (a local unix socket only)."""
        return None

    def api_credentials(self) -> list[str]:
        """curl options that carry the harness's own credentials for api_url."""
        return []


class HostEngine(Engine):
    """The host's own Docker engine."""
    kind = "host"

    def describe(self) -> str:
        return f"host engine (kernel {os.uname().release})"

    def unavailable_reason(self, mode: str) -> str | None:
        return ipvs_missing_reason() if mode == "ipvs" else None

    def ensure_guard(self, network: str = config.KIND_NETWORK) -> str:
        return _ensure_host_guard(self.runner, network)

    def check_guard(self, network: str = config.KIND_NETWORK) -> None:
        _check_host_guard(self.runner, network)

    def guard_drops(self, comment: str = GUARD_COMMENT) -> int:
        res = self.runner.run(["iptables", "-L", "DOCKER-USER", "-v", "-x", "-n"], check=False)
        return sum(int(line.split()[0]) for line in res.stdout.splitlines() if f"/* {comment} */" in line)

    def guard_counters(self) -> list[int]:
        return [self.guard_drops(), self.guard_drops(DNS_COMMENT)]

    def guard_report(self, before: list[int]) -> str:
        dns = self.guard_drops(DNS_COMMENT) - (list(before or []) + [0, 0])[1]
        return (super().guard_report(before) + f"; {dns} DNS lookups from the kind network to outside resolvers "
                "were rejected")

    def remove_guard_if_unused(self, network: str = config.KIND_NETWORK) -> bool:
        """Once no container of the harness is left on the network (another run's cluster, an
        external client), its rules go; containers of anyone else (a plain kind cluster) do not
        keep them there."""
        with _guard_lock():
            bridge = kind_bridge(self.runner, network)
            # None: the engine did not say; the rules stay rather than go under a running cluster.
            if bridge is None or harness_containers(self.runner, network) != [] or _live_host_clusters():
                return False
            out_if = outside_interface(self.runner)
            removed = [delete_rule(self.runner, rule) for rule in (
                _guard_rule(bridge, out_if), _dns_rule(bridge, out_if, "udp"), _dns_rule(bridge, out_if, "tcp"))]
            return remove_v6_guard(self.runner, bridge) or any(removed)

    def status_lines(self) -> list[str]:
        rules = saved_rules(self.runner, (GUARD_COMMENT, DNS_COMMENT))
        ours = list_containers(self.runner, config.OWNER_LABEL)  # kind nodes, sidecars, external clients
        return [f"{self.describe()}: harness containers: "
                + ("engine not answering" if ours is None else ", ".join(ours) or "none"),
                f"{self.describe()}: guard rules: {len(rules)}", *(f"  {r}" for r in rules)]

    def clean_up(self, force: bool) -> tuple[list[str], int]:
        lines = []
        gone = remove_containers(self.runner, config.OWNER_LABEL, "svc-byo-")  # --byo-kubeconfig runs' sidecars
        gone += remove_containers(self.runner, f"{config.OWNER_LABEL}=image-build", "svc-harness-node-build-",
                                  only=lambda x: force or not _builder_alive(x.labels))
        if gone:
            lines.append(f"removed containers: {', '.join(gone)}")
        if self.remove_guard_if_unused():
            lines.append("removed the host's guard rules (no container of the harness is left on the kind network)")
        return lines, 0


def _builder_alive(labels: dict) -> bool:
    """Whether the image build that made a node-build container still runs (a killed build
    leaves its container running `sleep infinity`)."""
    import json
    from ..owners import Owner
    try:
        owner = Owner.from_dict(json.loads(labels.get(config.BUILDER_LABEL, "")))
    except ValueError:
        owner = None
    return owner is not None and owner.alive()


def saved_rules(runner: Runner, comments: tuple[str, ...],
                saves: tuple[str, ...] = ("iptables-save", "ip6tables-save")) -> list[str]:
    """The rules (as iptables-save prints them) whose line carries one of `comments`."""
    return [line for save in saves for line in runner.run([save], check=False).stdout.splitlines()
            if any(c in line for c in comments)]


def harness_containers(runner: Runner, network: str) -> list[str] | None:
    """Containers on `network` that the harness made: nodes of a cluster with a harness marker,
    and containers carrying the harness's owner label; None if the engine did not answer."""
    from ..owners import cluster_markers
    ours = {name for name, _ in cluster_markers()}
    found = runner.engine(f"list containers on network {network}",
                          lambda c: [(x.name, x.labels) for x in c.containers.list(
                              all=True, filters={"network": network}, ignore_removed=True)],
                          check=False, default=None)
    if found is None:
        return None
    # (Images the harness builds carry the owner label too, as "image-build": a plain kind cluster
    # made from the harness's node image is not the harness's.)
    return [name for name, labels in found
            if labels.get(config.KIND_CLUSTER_LABEL) in ours or labels.get(config.OWNER_LABEL) in CONTAINER_ROLES]


def _live_host_clusters() -> list[str]:
    """Clusters of the host engine whose run is still going. One being made has its marker (and
    the guard) before kind has made any container, and needs the rules as much as a running one."""
    from ..owners import Owner, cluster_markers
    live = []
    for name, m in cluster_markers():
        m = m or {}
        owner = Owner.from_dict(m.get("owner"))
        if m.get("engine", "host") == "host" and not m.get("engine_env") and owner and owner.alive():
            live.append(name)
    return live


def image_id(runner: Runner, tag: str) -> str:
    """The ID of image `tag` on the engine `runner` reaches, "" if it has none."""
    return runner.engine(f"inspect image {tag}", lambda c: c.images.get(tag).id, check=False, default="",
                         timeout=30)


def remove_containers(runner: Runner, label: str, name_prefix: str = "", only=None, volumes: bool = False,
                      timeout: float = 120) -> list[str]:
    """Force-remove the containers carrying `label` (key or key=value) whose name starts with
    `name_prefix` and, if given, for which `only(container)` holds (with their anonymous volumes
    when `volumes`); returns their names."""
    def remove(c) -> list[str]:
        gone = []
        for x in c.containers.list(all=True, filters={"label": label}, ignore_removed=True):
            if x.name.startswith(name_prefix) and (only is None or only(x)):
                x.remove(force=True, v=volumes)
                gone.append(x.name)
        return gone
    return runner.engine(f"remove containers {label} {name_prefix}*", remove, check=False, default=[],
                         timeout=timeout)


def list_containers(runner: Runner, label: str) -> list[str] | None:
    """Names of the containers carrying `label`; None when the engine does not answer."""
    return runner.engine(f"list containers {label}", lambda c: [
        x.name for x in c.containers.list(all=True, filters={"label": label}, ignore_removed=True)],
        check=False, default=None)


def remove_container(runner: Runner, name: str) -> None:
    """Force-remove container `name` if it exists."""
    import docker
    def remove(c):
        try:
            c.containers.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass
    runner.engine(f"remove container {name}", remove, check=False)


def _guard_lock():
    """Machine-wide: two runs install, check and remove the host's guard rules one at a time.
    One lock object per process (is_singleton), so it is reentrant: a SIGTERM handler's clean-up
    that arrives while this process holds it would otherwise wait on its own flock."""
    from filelock import FileLock
    (config.CACHE / "locks").mkdir(parents=True, exist_ok=True)
    return FileLock(str(config.CACHE / "locks" / "host-guard.lock"), timeout=600, is_singleton=True)


def outside_interface(runner: Runner = DEFAULT) -> str:
    out = runner.run(["ip", "-o", "route", "show", "default"]).stdout.split()
    return out[out.index("dev") + 1] if "dev" in out else "eth0"


def _network(runner: Runner, network: str) -> dict | None:
    return runner.engine(f"inspect network {network}", lambda c: c.networks.get(network).attrs, check=False)


def kind_bridge(runner: Runner = DEFAULT, network: str = config.KIND_NETWORK) -> str | None:
    attrs = _network(runner, network)
    return f"br-{attrs['Id'][:12]}" if attrs else None


def ensure_kind_network(runner: Runner = DEFAULT, network: str = config.KIND_NETWORK) -> str:
    """Make sure the kind network exists, so the guard is in place before any node starts.

    kind uses an existing network of this name as it is. We give it an explicit
    IPv4 subnet, one that no host route uses, so every address the suites may
    send traffic to is known before a node starts.
    """
    if kind_bridge(runner, network) is None:
        import docker
        subnet = free_subnet(runner)
        gateway = str(next(ipaddress.ip_network(subnet).hosts()))
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet, gateway=gateway)])
        runner.engine(f"create network {network} ({subnet})", lambda c: c.networks.create(
            network, driver="bridge", ipam=ipam, options={"com.docker.network.bridge.enable_ip_masquerade": "true",
                                                          "com.docker.network.driver.mtu": "1500"}))
    return kind_bridge(runner, network)


def free_subnet(runner: Runner = DEFAULT) -> str:
    """First 172.18-31.0.0/16 that no host route uses."""
    used = runner.run(["ip", "-o", "route"], check=False).stdout
    for second in range(18, 32):
        if f"172.{second}." not in used:
            return f"172.{second}.0.0/16"
    raise PreflightError("no free 172.18-31.0.0/16 subnet for the kind network")


def _ipam_v4(runner: Runner, network: str, key: str) -> str:
    attrs = _network(runner, network)
    if attrs is None:
        raise PreflightError(f"no docker network {network} on the {runner.where} engine")
    v4 = [c[key] for c in (attrs.get("IPAM") or {}).get("Config") or [] if c.get(key) and ":" not in c[key]]
    if not v4:
        raise PreflightError(f"docker network {network} has no IPv4 {key.lower()}")
    return v4[0]


def kind_gateway(runner: Runner = DEFAULT, network: str = config.KIND_NETWORK) -> str:
    """The kind network's IPv4 gateway: the engine's machine as its containers see it (Docker
    records it only when it was given; otherwise it is the subnet's first address)."""
    try:
        return _ipam_v4(runner, network, "Gateway")
    except PreflightError:
        return str(next(ipaddress.ip_network(_ipam_v4(runner, network, "Subnet")).hosts()))


def network_subnet(runner: Runner = DEFAULT, network: str = config.KIND_NETWORK) -> str:
    """The kind network's IPv4 subnet, e.g. 172.18.0.0/16."""
    return _ipam_v4(runner, network, "Subnet")


def _guard_rule(bridge: str, out_if: str) -> list[str]:
    return ["DOCKER-USER", "-i", bridge, "-o", out_if, "-m", "comment", "--comment", GUARD_COMMENT, "-j", "DROP"]


def _ensure_host_guard(runner: Runner, network: str) -> str:
    """Install (once) and verify the drop rule in DOCKER-USER; returns the rule as text."""
    with _guard_lock():
        return _install_host_guard(runner, network)


def _install_host_guard(runner: Runner, network: str) -> str:
    bridge = ensure_kind_network(runner, network)
    out_if = outside_interface(runner)
    rule = _guard_rule(bridge, out_if)
    # kind nodes resolve names through Docker's embedded DNS, which forwards
    # names it does not know from inside the node, i.e. through the kind bridge.
    # Those lookups are rejected first (fast failure instead of timeouts) and
    # counted apart, so the egress guard's own counter measures everything else.
    wanted = [_dns_rule(bridge, out_if, "udp"), _dns_rule(bridge, out_if, "tcp"), rule]
    present = [runner.run(["iptables", "-C", *r], check=False).ok for r in wanted]
    if not all(present):
        for r, there in zip(wanted, present):
            if there:
                runner.run(["iptables", "-D", *r])
        for r in reversed(wanted):  # -I prepends: end with the DNS rules first, then the drop
            runner.run(["iptables", "-I", *r], what="installing the egress guard in DOCKER-USER")
    ensure_v6_guard(runner, bridge)
    _check_host_guard(runner, network)
    return " ".join(rule)


# ---- IPv6: the harness's networks carry IPv4 only, so every IPv6 packet forwarded from them is
# dropped, wherever it goes (a second uplink, a VPN, an IPv6 default route included).
IPV6_FORWARDING = Path("/proc/sys/net/ipv6/conf/all/forwarding")


def v6_rule(iface: str, comment: str = GUARD_COMMENT) -> list[str]:
    return ["FORWARD", "-i", iface, "-m", "comment", "--comment", comment, "-j", "DROP"]


def _forwards_ipv6() -> bool:
    try:
        return IPV6_FORWARDING.read_text().strip() != "0"
    except OSError:
        return False


def ensure_v6_guard(runner: Runner, iface: str, comment: str = GUARD_COMMENT) -> None:
    rule = v6_rule(iface, comment)
    if runner.run(["ip6tables", "-C", *rule], check=False).ok:
        return
    res = runner.run(["ip6tables", "-I", *rule], check=False, what="installing the IPv6 egress guard")
    if not res.ok and _forwards_ipv6():
        raise PreflightError(f"cannot install the IPv6 egress guard (`ip6tables -I {' '.join(rule)}`: "
                             f"{res.stderr.strip()}) while this host forwards IPv6 "
                             f"({IPV6_FORWARDING} is on); refusing to send traffic without it")


def check_v6_guard(runner: Runner, iface: str, comment: str = GUARD_COMMENT) -> None:
    """Missing is fine only where the host forwards no IPv6 at all (ip6tables absent, say)."""
    rule = v6_rule(iface, comment)
    if not runner.run(["ip6tables", "-C", *rule], check=False).ok and _forwards_ipv6():
        raise PreflightError(f"IPv6 egress guard missing: expected `ip6tables -I {' '.join(rule)}`; "
                             "refusing to send traffic without it")


def delete_rule(runner: Runner, rule: list[str], tool: str = "iptables") -> bool:
    """Delete every copy of `rule` (one per install; a few more if runs raced), at most 10;
    whether one was there."""
    removed = False
    for _ in range(10):
        if not runner.run([tool, "-D", *rule], check=False).ok:
            break
        removed = True
    return removed


def remove_v6_guard(runner: Runner, iface: str, comment: str = GUARD_COMMENT) -> bool:
    return delete_rule(runner, v6_rule(iface, comment), "ip6tables")


def _dns_rule(bridge: str, out_if: str, proto: str) -> list[str]:
    return ["DOCKER-USER", "-i", bridge, "-o", out_if, "-p", proto, "--dport", "53",
            "-m", "comment", "--comment", DNS_COMMENT, "-j", "REJECT"]


def _check_host_guard(runner: Runner, network: str) -> None:
    bridge = kind_bridge(runner, network)
    if bridge is None:
        return  # no kind network, so no cluster traffic can be forwarded anywhere
    rule = _guard_rule(bridge, outside_interface(runner))
    if not runner.run(["iptables", "-C", *rule], check=False).ok:
        raise PreflightError(f"egress guard missing: expected `iptables -I {' '.join(rule)}`; "
                             "refusing to send traffic without it")
    check_v6_guard(runner, bridge)
