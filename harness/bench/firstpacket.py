"""First-packet timing in microseconds, its statistics, and the proof of its resolution.

`svc-probe -connect IP:PORT` (images/tools/probe/connect.go) runs in the client pod and times
each new TCP connection: connect() until the SYN-ACK is in (`connect_us`: the first packet's way
through the node's rules and back) and until the answer's first byte (`first_byte_us`).

Resolution, measured on every benchmark cluster before it grows (`resolution`):
  back to back   two samples to the same pod IP: how far apart two measurements of an unchanged
                 path fall (the smallest difference the probe can tell)
  slowed path    the same pod IP with `rules` non-matching rules put first in the client node's
                 nat PREROUTING (every new connection walks them, as a first packet walks
                 KUBE-SERVICES); the probe must see it: the slowed p50 above the unslowed one
                 in nearly every round. Unslowed and slowed samples alternate in short rounds
                 (only the one jump to the rules is added and removed), each round compares its
                 own two, and the order within a round alternates too: a machine that gets
                 busier or quieter during the check moves both sides of a round alike. Separate
                 samples have drifted 40-100 us apart under load, more than 10000 rules cost.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

from ..probe import probe_records
from ..stats import percentile, percentile_ci

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
    """A guard, not the measure; it scales like every wait in the slow UML guest. (Connects straight
    to a pod that time out in ipvs clusters are IPVS's, results.POD_FAILURES, not slowness.)"""
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
# The shift must stand clear of a busy machine's round-to-round noise (about +-100 us at load 6):
# 40000 rules once moved the p50 by only +63 us there (docs/bench/README.md), 100000 go in within
# about a second and cost several hundred.
SLOW_RULES = 100000
ROUNDS = 8  # of unslowed and slowed samples in the resolution check
# Seen when the slowed p50 is higher in at least ROUNDS - 1 rounds: with no cost at all, a coin
# toss per round, that happens by chance 9 times in 256 (3.5 %).
ROUNDS_UP_NEEDED = ROUNDS - 1


def slow_rules_script(rules: int) -> str:
    """A shell script for the node: chain SLOW_CHAIN with `rules` source matches that never match,
    through one iptables-restore (written in the node: the rules are too many for a command line).
    Nothing jumps to it yet (slow_jump)."""
    return (f'{{ echo "*nat"; echo ":{SLOW_CHAIN} - [0:0]"; i=0; while [ $i -lt {int(rules)} ]; do '
            f'echo "-A {SLOW_CHAIN} -s {SLOW_SOURCE_PREFIX}$((i % 254 + 1))/32 -j RETURN"; i=$((i + 1)); done; '
            f'echo COMMIT; }} | iptables-restore --noflush')


def slow_jump(node, on: bool) -> None:
    """Put the jump to SLOW_CHAIN first in `node`'s nat PREROUTING, or take it out."""
    node.exec(["iptables", "-t", "nat", "-I" if on else "-D", "PREROUTING"] + (["1"] if on else [])
              + ["-j", SLOW_CHAIN], timeout=60)


@contextlib.contextmanager
def slow_chain(node, rules: int):
    """SLOW_CHAIN with `rules` rules on `node` (a harness.peers.NodePeer), not jumped to; removed
    again (with any jump to it) on the way out."""
    node.exec(["sh", "-c", slow_rules_script(rules)], timeout=300)
    try:
        yield
    finally:
        node.exec(["sh", "-c", f"while iptables -t nat -D PREROUTING -j {SLOW_CHAIN} 2>/dev/null; do :; done; "
                               f"iptables -t nat -F {SLOW_CHAIN}; iptables -t nat -X {SLOW_CHAIN}"],
                  check=False, timeout=120)


def round_order(rounds: int) -> list[tuple[int, bool]]:
    """(round, slowed?) in sampling order: unslowed first in even rounds, slowed first in odd ones,
    so neither side always follows the other."""
    return [(r, on) for r in range(rounds) for on in ((False, True) if r % 2 == 0 else (True, False))]


def resolution(peer, node, pod_ip: str, port: int, n: int, rules: int) -> dict:
    """Back-to-back samples to a pod IP, then unslowed against slowed in ROUNDS alternating rounds
    of n // ROUNDS connections a side (see the module doc)."""
    first = sample(peer, pod_ip, port, n)
    second = sample(peer, pod_ip, port, n)
    out = {"pod_ip": pod_ip, "n": n, "first": summary(first.connect_us), "second": summary(second.connect_us),
           "failures": {**first.failures, **second.failures}, "slow_rules": rules}
    a, b = out["first"]["p50"], out["second"]["p50"]
    out["back_to_back_p50_diff_us"] = abs(a["value"] - b["value"]) if a and b else None
    if not rules:
        return out
    per_round = max(20, n // ROUNDS)
    taken: dict[bool, list[Timings]] = {False: [], True: []}
    with slow_chain(node, rules):
        for _, on in round_order(ROUNDS):  # a failed sample leaves the jump to slow_chain's cleanup
            if on:
                slow_jump(node, True)
            taken[on].append(sample(peer, pod_ip, port, per_round))
            if on:
                slow_jump(node, False)
    shifts = [percentile(s.connect_us, 50) - percentile(u.connect_us, 50) if s.connect_us and u.connect_us
              else None for u, s in zip(taken[False], taken[True])]
    up = sum(1 for x in shifts if x is not None and x > 0)
    known = [x for x in shifts if x is not None]
    out.update(rounds=ROUNDS, round_n=per_round, round_shifts_us=shifts, rounds_up=up,
               base=summary([x for t in taken[False] for x in t.connect_us]),
               slowed=summary([x for t in taken[True] for x in t.connect_us]),
               slowed_p50_shift_us=percentile(known, 50) if known else None,
               detected=up >= ROUNDS_UP_NEEDED)
    for on, label in ((False, "unslowed"), (True, "slowed")):
        for t in taken[on]:
            for k, v in t.failures.items():
                out["failures"][f"{label} {k}"] = out["failures"].get(f"{label} {k}", 0) + v
    log.info("slowed path (%d rules): p50 higher in %d of %d rounds (shifts %s us) -> %s", rules, up, ROUNDS,
             ", ".join("–" if x is None else f"{x:+.1f}" for x in shifts), "seen" if out["detected"] else "NOT seen")
    return out
