"""First-packet timing in microseconds, its statistics, and the proof of its resolution.

`svc-probe -connect IP:PORT` (images/tools/probe/connect.go) runs in the client pod and times
each new TCP connection: connect() until the SYN-ACK is in (`connect_us`: the first packet's way
through the node's rules and back) and until the answer's first byte (`first_byte_us`).

Resolution, measured on every benchmark cluster before it grows (`resolution`):
  back to back   two samples to the same pod IP: how far apart two measurements of an unchanged
                 path fall (the smallest difference the probe can tell)
  slowed path    the same pod IP with `rules` non-matching rules put first in the client node's
                 nat PREROUTING (every new connection walks them, as a first packet walks
                 KUBE-SERVICES); the probe must see it: the slowed p50's confidence interval
                 lies wholly above the unslowed one's
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

from ..probe import probe_records
from ..stats import clearly_above, percentile, percentile_ci

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 1.0
SLOW_CHAIN = "SVC-HARNESS-SLOW"
# TEST-NET-1 (RFC 5737): never a source address in a cluster, so none of the rules matches.
SLOW_SOURCE_PREFIX = "192.0.2."
QUANTILES = (50, 90, 99)


@dataclass
class Timings:
    """One target's samples (microseconds) and how the rest failed."""
    target: str
    connect_us: list[float] = field(default_factory=list)
    first_byte_us: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_records(cls, target: str, records: list[dict]) -> "Timings":
        t = cls(target)
        for rec in records:
            if rec["kind"] != "ok":
                t.failures[rec["kind"]] = t.failures.get(rec["kind"], 0) + 1
                continue
            t.connect_us.append(rec["connect_us"])
            if rec.get("first_byte_us"):
                t.first_byte_us.append(rec["first_byte_us"])
        return t


def connect_timeout_s() -> float:
    """A guard, not the measure: in the UML guest (slowdown 3) connects to a plain pod IP stalled
    past 1 s now and then (14 of 600 on 2026-12-03), so the limit scales like every wait."""
    from ..waits import slowdown
    return CONNECT_TIMEOUT_S * slowdown()


def probe_argv(ip: str, port: int, n: int, path: str = "/") -> list[str]:
    limit = connect_timeout_s()
    return ["svc-probe", "-connect", f"{ip}:{port}", "-n", str(n), "-request", path,
            "-timeout", f"{limit:g}s", "-max-duration", f"{max(30, n * limit / 10):.0f}s"]


def sample(peer, ip: str, port: int, n: int) -> Timings:
    """n new connections from `peer` (see harness.peers) to ip:port, one after another, in one exec."""
    records = probe_records(peer, probe_argv(ip, port, n), timeout=max(30, n * connect_timeout_s() / 10) + 60)
    t = Timings.from_records(f"{ip}:{port}", records)
    s = summary(t.connect_us)
    log.info("%s -> %s:%d: %d connections, connect p50 %s us%s", peer.describe(), ip, port, len(t.connect_us),
             _us(s.get("p50")), f", failed {t.failures}" if t.failures else "")
    return t


# ---- summaries ----------------------------------------------------------------------------------
def summary(values: list[float]) -> dict:
    """n and p50/p90/p99, each with its confidence interval (harness.stats.percentile_ci)."""
    out: dict = {"n": len(values)}
    for q in QUANTILES:
        out[f"p{q}"] = percentile_ci(values, q)
    return out


def _us(ci: dict | None) -> str:
    return "–" if not ci else f"{ci['value']:.1f} [{ci['low']:.1f}–{ci['high']:.1f}]"


# ---- the slowed path --------------------------------------------------------------------------
def slow_rules_script(rules: int) -> str:
    """A shell script for the node: chain SLOW_CHAIN with `rules` source matches that never match,
    jumped to first from nat PREROUTING, through one iptables-restore (written in the node: the
    rules are too many for a command line)."""
    return (f'{{ echo "*nat"; echo ":{SLOW_CHAIN} - [0:0]"; i=0; while [ $i -lt {int(rules)} ]; do '
            f'echo "-A {SLOW_CHAIN} -s {SLOW_SOURCE_PREFIX}$((i % 254 + 1))/32 -j RETURN"; i=$((i + 1)); done; '
            f'echo "-I PREROUTING 1 -j {SLOW_CHAIN}"; echo COMMIT; }} | iptables-restore --noflush')


@contextlib.contextmanager
def slowed_path(node, rules: int):
    """`rules` non-matching rules first in `node`'s nat PREROUTING (`node`: a harness.peers.NodePeer),
    removed again on the way out."""
    node.exec(["sh", "-c", slow_rules_script(rules)], timeout=300)
    try:
        yield
    finally:
        node.exec(["sh", "-c", f"iptables -t nat -D PREROUTING -j {SLOW_CHAIN}; "
                               f"iptables -t nat -F {SLOW_CHAIN}; iptables -t nat -X {SLOW_CHAIN}"],
                  check=False, timeout=120)


def resolution(peer, node, pod_ip: str, port: int, n: int, rules: int) -> dict:
    """Back-to-back samples to a pod IP, then the same with the slowed path (see the module doc)."""
    first = sample(peer, pod_ip, port, n)
    second = sample(peer, pod_ip, port, n)
    out = {"pod_ip": pod_ip, "n": n, "first": summary(first.connect_us), "second": summary(second.connect_us),
           "failures": {**first.failures, **second.failures}, "slow_rules": rules}
    a, b = out["first"]["p50"], out["second"]["p50"]
    out["back_to_back_p50_diff_us"] = abs(a["value"] - b["value"]) if a and b else None
    if rules:
        with slowed_path(node, rules):
            slowed = sample(peer, pod_ip, port, n)
        base = summary(first.connect_us + second.connect_us)
        out.update(slowed=summary(slowed.connect_us), base=base,
                   slowed_p50_shift_us=(percentile(slowed.connect_us, 50) - base["p50"]["value"])
                   if slowed.connect_us and base["p50"] else None,
                   detected=clearly_above(summary(slowed.connect_us)["p50"], base["p50"]))
        out["failures"].update({f"slowed {k}": v for k, v in slowed.failures.items()})
        log.info("slowed path (%d rules): p50 %s us against %s us -> %s", rules, _us(out["slowed"]["p50"]),
                 _us(base["p50"]), "seen" if out["detected"] else "NOT seen")
    return out
