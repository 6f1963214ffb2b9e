"""Host-side preconditions: the Docker engine, the IPVS preflight, the egress guard.

The egress guard keeps every packet of the suites on this machine: a rule in
Docker's DOCKER-USER chain drops anything forwarded from the kind network's
bridge to the host's outside interface. Traffic between nodes, containers and
the host never crosses that path, so the rule's drop counter must stay 0.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from . import config
from .runner import DEFAULT, Runner

log = logging.getLogger(__name__)

GUARD_COMMENT = "svc-harness egress guard"
DNS_COMMENT = "svc-harness dns guard"


class PreflightError(RuntimeError):
    pass


def engine_ready(runner: Runner = DEFAULT) -> None:
    if not runner.run(["docker", "info"], check=False, timeout=30).ok:
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


def mode_unavailable_reason(mode: str, ipvs_engine: str = "auto") -> str | None:
    """Why kube-proxy cannot run in `mode` on this machine, or None if it can (the preflight).

    ipvs needs IPVS in the kernel of the engine that runs the nodes: the host's,
    or the UML guest's (harness.guest) when the host lacks it and the guest is allowed.
    """
    if mode != "ipvs":
        return None
    missing = ipvs_missing_reason()
    if choose(mode, ipvs_engine, missing) == "host":
        return f"{missing} (--ipvs-engine=host forbids the UML guest engine)" if missing else None
    from .guest import build
    a = build.GuestBuilder().paths()
    absent = [str(p) for p in (a.kernel, a.rootfs) if not p.exists()]
    if absent:
        return (f"ipvs runs in the UML guest engine here ({missing or '--ipvs-engine=guest'}), but the guest is "
                f"not built ({', '.join(absent)} missing): run `python -m harness.guest build` "
                "(scripts/setup does it)")
    return None


def choose(mode: str, preference: str, ipvs_missing: str | None) -> str:
    """Which Docker engine a mode's cluster runs on: "host" or "guest".

    Only ipvs ever needs the guest (harness.guest): with preference "auto" it
    is used when the host kernel lacks IPVS (`ipvs_missing` is the reason).
    """
    if mode != "ipvs" or preference == "host":
        return "host"
    if preference == "guest":
        return "guest"
    return "guest" if ipvs_missing else "host"


def _guest(runner: Runner) -> bool:
    """Does this runner reach a guest's engine (DOCKER_HOST set by harness.guest)?"""
    return bool(runner.env.get("DOCKER_HOST"))


def outside_interface(runner: Runner = DEFAULT) -> str:
    out = runner.run(["ip", "-o", "route", "show", "default"]).stdout.split()
    return out[out.index("dev") + 1] if "dev" in out else "eth0"


def kind_bridge(runner: Runner = DEFAULT, network: str = config.KIND_NETWORK) -> str | None:
    res = runner.run(["docker", "network", "inspect", "-f", "{{.Id}}", network], check=False)
    return f"br-{res.stdout.strip()[:12]}" if res.ok else None


def ensure_kind_network(runner: Runner = DEFAULT, network: str = config.KIND_NETWORK) -> str:
    """Make sure the kind network exists, so the guard is in place before any node starts.

    kind uses an existing network of this name as it is. We give it an explicit
    IPv4 subnet, one that no host route uses, so every address the suites may
    send traffic to is known before a node starts.
    """
    if kind_bridge(runner, network) is None:
        subnet = free_subnet(runner)
        runner.run(["docker", "network", "create", "-d", "bridge", "--subnet", subnet,
                    "-o", "com.docker.network.bridge.enable_ip_masquerade=true",
                    "-o", "com.docker.network.driver.mtu=1500", network], what="creating the kind network")
    return kind_bridge(runner, network)


def free_subnet(runner: Runner = DEFAULT) -> str:
    """First 172.18-31.0.0/16 that no host route uses."""
    used = runner.run(["ip", "-o", "route"], check=False).stdout
    for second in range(18, 32):
        if f"172.{second}." not in used:
            return f"172.{second}.0.0/16"
    raise PreflightError("no free 172.18-31.0.0/16 subnet for the kind network")


def network_subnet(runner: Runner = DEFAULT, network: str = config.KIND_NETWORK) -> str:
    """The kind network's IPv4 subnet, e.g. 172.18.0.0/16."""
    out = runner.run(["docker", "network", "inspect", "-f",
                      "{{range .IPAM.Config}}{{.Subnet}} {{end}}", network]).stdout.split()
    v4 = [s for s in out if ":" not in s]
    if not v4:
        raise PreflightError(f"docker network {network} has no IPv4 subnet")
    return v4[0]


def _guard_rule(bridge: str, out_if: str) -> list[str]:
    return ["DOCKER-USER", "-i", bridge, "-o", out_if, "-m", "comment", "--comment", GUARD_COMMENT, "-j", "DROP"]


def ensure_egress_guard(runner: Runner = DEFAULT, network: str = config.KIND_NETWORK) -> str:
    """Install (once) and verify the drop rule; returns the rule as text.

    For a guest engine the guard is the host's drop of everything forwarded
    from the guest's link (the guest has no route out of its own).
    """
    if _guest(runner):
        from .guest import vm
        ensure_kind_network(runner, network)  # the guest engine's own kind network, same explicit subnet rule
        return vm.ensure_guard(runner)
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
    check_egress_guard(runner, network)
    return " ".join(rule)


def _dns_rule(bridge: str, out_if: str, proto: str) -> list[str]:
    return ["DOCKER-USER", "-i", bridge, "-o", out_if, "-p", proto, "--dport", "53",
            "-m", "comment", "--comment", DNS_COMMENT, "-j", "REJECT"]


def check_egress_guard(runner: Runner = DEFAULT, network: str = config.KIND_NETWORK) -> None:
    """Refuse to send traffic unless the drop rule is present."""
    if _guest(runner):
        from .guest import vm
        vm.check_guard(runner)
        return
    bridge = kind_bridge(runner, network)
    if bridge is None:
        return  # no kind network, so no cluster traffic can be forwarded anywhere
    rule = _guard_rule(bridge, outside_interface(runner))
    if not runner.run(["iptables", "-C", *rule], check=False).ok:
        raise PreflightError(f"egress guard missing: expected `iptables -I {' '.join(rule)}`; "
                             "refusing to send traffic without it")


def egress_drops(runner: Runner = DEFAULT, comment: str = GUARD_COMMENT) -> int:
    """Packets a guard rule has stopped so far (the egress guard's should stay 0)."""
    if _guest(runner):
        from .guest import vm
        return vm.guard_drops(runner) if comment == GUARD_COMMENT else 0
    res = runner.run(["iptables", "-L", "DOCKER-USER", "-v", "-x", "-n"], check=False)
    return sum(int(line.split()[0]) for line in res.stdout.splitlines() if f"/* {comment} */" in line)
