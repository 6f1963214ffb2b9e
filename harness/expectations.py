"""Expected outcomes as data, and the one path that compares them with a sample.

Suites only send traffic; what should happen is declared here, per
(experiment, vantage point, proxy mode), and `check` compares it with what
was observed, printing both.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from harness import config, stats
from harness.probe import REFUSED as K_REFUSED, RESET, TIMEOUT, UNREACHABLE, Sample

log = logging.getLogger(__name__)

# --- outcomes: what a sample must show ---
ANSWERS = "answers"                # every request got a 2xx answer
REFUSED = "refused"                # every request failed with "refused"
NO_ANSWER = "no-answer"            # every request failed: timeout, refused, reset or unreachable
DROPPED = "dropped"                # every request timed out (packets silently dropped)
UNIFORM = "uniform"                # every expected backend answered, shares consistent with uniform
ROUND_ROBIN = "round-robin"        # answers rotate strictly over the backends
ONE_BACKEND = "one-backend"        # every answer came from the same single backend
SPREAD = "spread"                  # every request answered, by more than one backend
COVERED = "covered"                # every expected backend answered and no other (not used by
                                   # the table; for suites that assert coverage on their own)
CLIENT_IP_KEPT = "client-ip-kept"  # servers saw the vantage point's own IP as client IP
CLIENT_IP_LOST = "client-ip-lost"  # servers never saw the vantage point's own IP
HEALTHY = "healthy"                # every request answered HTTP 200 (health-check node port)
UNHEALTHY = "unhealthy"            # every request answered HTTP 503 (health-check node port)

OUTCOMES = frozenset({ANSWERS, REFUSED, NO_ANSWER, DROPPED, UNIFORM, ROUND_ROBIN,
                      ONE_BACKEND, SPREAD, COVERED, CLIENT_IP_KEPT, CLIENT_IP_LOST,
                      HEALTHY, UNHEALTHY})

# Failure kinds that mean "the Service did not answer" (as opposed to an HTTP error).
NO_ANSWER_KINDS = frozenset({TIMEOUT, K_REFUSED, RESET, UNREACHABLE})

VANTAGES = ("pod", "node", "external")
MODES = ("iptables", "ipvs", "nftables")
ANY = "*"


@dataclass(frozen=True)
class Expect:
    outcomes: tuple[str, ...]
    why: str


# Keyed by (experiment, vantage, mode); "*" matches any vantage or mode.
EXPECTATIONS: dict[tuple[str, str, str], Expect] = {
    ("clusterip-no-endpoints", ANY, ANY): Expect(
        (REFUSED,), "kube-proxy REJECTs traffic to a Service with no endpoints, so connects "
                    "are refused at once"),
    ("clusterip-one-pod", ANY, ANY): Expect(
        (ANSWERS, ONE_BACKEND), "a ClusterIP with a single ready endpoint sends every request "
                                "to that pod"),
    ("clusterip-one-pod", "pod", ANY): Expect(
        (ANSWERS, ONE_BACKEND, CLIENT_IP_KEPT),
        "pod-to-ClusterIP traffic is only DNATed, so the pod sees the calling pod's own IP"),
    ("clusterip-scaled", ANY, ANY): Expect(
        (ANSWERS, COVERED), "a scaled Deployment's ClusterIP answers every request, from "
                              "exactly the ready pods"),
    ("distribution", "pod", "iptables"): Expect(
        (ANSWERS, UNIFORM), "iptables picks an endpoint with per-rule random probabilities "
                            "(statistic mode random), giving a uniform choice"),
    ("distribution", "pod", "nftables"): Expect(
        (ANSWERS, UNIFORM), "nftables picks an endpoint with numgen random mod n, a uniform "
                            "choice"),
    ("distribution", "pod", "ipvs"): Expect(
        (ANSWERS, ROUND_ROBIN), "ipvs uses the rr scheduler by default, so new connections "
                                "rotate over the endpoints"),
    ("affinity-clientip", ANY, ANY): Expect(
        (ANSWERS, ONE_BACKEND), "sessionAffinity: ClientIP pins one client IP to one endpoint"),
    ("affinity-none", ANY, ANY): Expect(
        (ANSWERS, SPREAD), "without session affinity each new connection may go to another "
                           "endpoint"),
    ("nodeport-every-node", "external", ANY): Expect(
        (ANSWERS,), "kube-proxy opens a NodePort on every node, with or without a local "
                    "endpoint"),
    ("etp-cluster-one-node", "external", ANY): Expect(
        (ANSWERS, COVERED), "externalTrafficPolicy: Cluster balances NodePort traffic over the "
                            "endpoints on every node"),
    ("etp-cluster-remote-backend", "external", ANY): Expect(
        (ANSWERS, CLIENT_IP_LOST), "externalTrafficPolicy: Cluster SNATs traffic forwarded to "
                                   "another node, so the pod sees a node IP"),
    ("etp-local-backend-node", "external", ANY): Expect(
        (ANSWERS, COVERED, CLIENT_IP_KEPT), "externalTrafficPolicy: Local serves from a local endpoint "
                                   "without SNAT, so the client IP is kept"),
    ("etp-local-no-backend-node", "external", ANY): Expect(
        (NO_ANSWER,), "externalTrafficPolicy: Local drops NodePort traffic on nodes without a "
                      "local endpoint"),
    ("etp-local-hc-backend-node", "external", ANY): Expect(
        (HEALTHY,), "the health-check node port reports 200 where the node has local endpoints, "
                    "so a cloud load balancer keeps sending there"),
    ("etp-local-hc-empty-node", "external", ANY): Expect(
        (UNHEALTHY,), "the health-check node port reports 503 where the node has no local "
                      "endpoint, so a load balancer skips it"),
    ("itp-local-own-node", "pod", ANY): Expect(
        (ANSWERS, COVERED), "internalTrafficPolicy: Local serves a pod from an endpoint on its own "
                    "node"),
    ("itp-local-no-backend", "pod", ANY): Expect(
        (NO_ANSWER,), "internalTrafficPolicy: Local never forwards to other nodes, so a pod on a "
                      "node without an endpoint gets no answer"),
    ("lb-pending-nodeport", "external", ANY): Expect(
        (ANSWERS,), "a LoadBalancer Service without an external address still works as a "
                    "NodePort"),
    ("lb-address", "external", ANY): Expect(
        (ANSWERS,), "kube-proxy forwards traffic for the LoadBalancer ingress IP to the "
                    "endpoints"),
    ("lb-source-range-allowed", "external", ANY): Expect(
        (ANSWERS,), "a client inside loadBalancerSourceRanges is let through"),
    ("lb-source-range-denied", "external", ANY): Expect(
        (NO_ANSWER,), "kube-proxy drops LoadBalancer traffic from clients outside "
                      "loadBalancerSourceRanges"),
    ("externalip-holder", "external", ANY): Expect(
        (ANSWERS,), "the node holding the external IP receives the traffic and kube-proxy "
                    "DNATs it to the endpoints"),
    ("externalip-other-node", "external", ANY): Expect(
        (REFUSED,), "traffic for the external IP is routed to the node holding it; another "
                      "node does not answer for it"),
    ("externalip-node-cut", "external", ANY): Expect(
        (NO_ANSWER,), "kube-proxy does not move an external IP, so with its node cut off "
                      "nothing answers"),
    ("externalname-http", "pod", ANY): Expect(
        (ANSWERS,), "an ExternalName Service is a DNS CNAME; the pod reaches the named host "
                    "directly"),
    # ipvs schedulers (kube-proxy ipvs.scheduler), sequential short requests from one client.
    ("ipvs-scheduler-rr", "pod", "ipvs"): Expect((ANSWERS, ROUND_ROBIN), "rr rotates over the real servers"),
    ("ipvs-scheduler-sh", "pod", "ipvs"): Expect((ANSWERS, ONE_BACKEND), "sh hashes the source address: one client, one server"),
    ("ipvs-scheduler-dh", "pod", "ipvs"): Expect((ANSWERS, ONE_BACKEND), "dh hashes the destination (the ClusterIP): one server"),
    ("ipvs-scheduler-lc", "pod", "ipvs"): Expect((ANSWERS, COVERED), "lc picks the server with the fewest connections; all get some"),
    # sed and nq count only *active* connections. One client's sequential requests leave
    # none active (a closed connection is inactive in IPVS), so every server ties and
    # both keep the first real server in the list: sed compares with a strict `>`, nq
    # returns the first idle server (net/netfilter/ipvs/ip_vs_sed.c, ip_vs_nq.c). They
    # spread only under concurrent load. lc adds inactive connections, so it rotates.
    ("ipvs-scheduler-sed", "pod", "ipvs"): Expect(
        (ANSWERS, ONE_BACKEND), "sed (shortest expected delay) counts active connections only: with "
                                "none active every server ties and the first one wins"),
    ("ipvs-scheduler-nq", "pod", "ipvs"): Expect(
        (ANSWERS, ONE_BACKEND), "nq (never queue) sends to the first idle server; sequential requests "
                                "leave every server idle, so the first one takes them all"),
    ("pod-to-pod", "pod", ANY): Expect((ANSWERS, CLIENT_IP_KEPT), "pods on different nodes reach each other directly, unNATed"),
    ("mode-change-keeps-service", "node", ANY): Expect(
        (ANSWERS,), "after switching proxy mode kube-proxy rebuilds the rules, so the Service "
                    "keeps answering"),
}

# What pinging a ClusterIP may get back (ping_outcome() names it from ping's output);
# the article's claim is about the echo reply: none in iptables/nftables.
# iptables and nftables only DNAT TCP/UDP ports and nothing owns the IP: no answer.
# nftables mode (v1.34) also REJECTs a NEW packet to an active ClusterIP that no
# Service port DNATed (chain cluster-ips-check, "Reject traffic to invalid ports of
# ClusterIPs", pkg/proxy/nftables/proxier.go), so ping may get port unreachable from
# the node: seen once this session (a loaded machine); other runs saw "no answer".
# ipvs binds every Service IP to the kube-ipvs0 dummy interface, so the address is
# local; the article says the node then answers ping. kube-proxy v1.34 does not let
# it: its filter chain KUBE-IPVS-FILTER (INPUT) REJECTs every NEW packet to a
# kube-ipvs0 address that matches no Service ip,port (pkg/proxy/ipvs/proxier.go,
# "prevent access to ports on the host through VIP addresses", kubernetes#72236), and
# ICMP echo matches none, so ping gets ICMP port unreachable from the node.
PING_OUTCOMES = {"iptables": {"no answer"}, "nftables": {"no answer", "port unreachable"},
                 "ipvs": {"port unreachable"}}


# Claims that changed between Kubernetes releases: the mode(s) they hold in, the first minor that
# shows them, and the upstream change that explains it.
@dataclass(frozen=True)
class Since:
    modes: tuple[str, ...]
    minor: tuple[int, int]
    why: str


RELEASE_CLAIMS = {
    # kube-proxy in ipvs mode, at start: an error-level log line and a Warning Event (reason
    # IPVSDeprecation, regarding its Node). v1.35 and v1.36 say the proxier "is now deprecated ...
    # Please use 'nftables' instead" (kubernetes#134539, KEP-5495); v1.37 adds the plan: "disabled by
    # default in Kubernetes 1.40 and removed in Kubernetes 1.43. Migrate to the 'nftables' proxier"
    # (kubernetes#139397, which also adds the KubeProxyIPVS feature gate).
    "ipvs-deprecation": Since(("ipvs",), (1, 35), "kube-proxy announces that ipvs is deprecated from v1.35 on "
                              "(kubernetes#134539); never in iptables or nftables mode"),
}


# kube-proxy also calls its event recorder with a Warning Event, reason IPVSDeprecation, on its Node
# (server_linux.go), while the proxier is made, before Run() starts the recorder's sink. Whether it
# reaches the API server varies: on v1.37.2 none arrived on 2026-12-02 (every node, two restarts),
# and one per node and start arrived on 2026-12-03 (evening, guest). None: E19 notes the Events in
# ipvs mode on >= 1.35 and does not judge them; elsewhere there must be none (never recorded).
IPVS_DEPRECATION_EVENT_DELIVERED: bool | None = None


def release_claim_holds(claim: str, mode: str, server_version: str) -> bool:
    """Whether RELEASE_CLAIMS[claim] should be seen in `mode` on a cluster running `server_version`
    (e.g. "v1.37.2", or "v1.35.4-gke.100")."""
    c = RELEASE_CLAIMS[claim]
    minor = config.minor_of(server_version)
    return mode in c.modes and minor >= c.minor


def ping_outcome(ping_output: str) -> str:
    """echo reply | port unreachable | other ICMP error (<what>) | no answer, from iputils ping's output."""
    if " bytes from " in ping_output:
        return "echo reply"
    if "Destination Port Unreachable" in ping_output:
        return "port unreachable"
    for line in ping_output.splitlines():
        if line.startswith("From ") and ("Unreachable" in line or "Prohibited" in line):
            return f"other ICMP error ({line.split(' ', 3)[-1].strip()})"
    return "no answer"


class ExpectationFailed(AssertionError):
    """A sample did not show the expected outcomes; the message shows both."""

    def __init__(self, message: str, lines: list[str]):
        super().__init__(message)
        self.lines = lines  # the observed evidence, for the report


def expect_for(experiment: str, vantage: str, mode: str) -> Expect:
    """The most specific entry: exact vantage and mode, then exact vantage,
    then exact mode, then the experiment's catch-all."""
    if vantage not in VANTAGES:
        raise ValueError(f"unknown vantage {vantage!r}; expected one of {VANTAGES}")
    if mode not in MODES:
        raise ValueError(f"unknown proxy mode {mode!r}; expected one of {MODES}")
    for key in ((experiment, vantage, mode), (experiment, vantage, ANY),
                (experiment, ANY, mode), (experiment, ANY, ANY)):
        if key in EXPECTATIONS:
            return EXPECTATIONS[key]
    known = sorted({(v, m) for e, v, m in EXPECTATIONS if e == experiment})
    hint = f"entries for it: {known}" if known else "the experiment has no entries at all"
    raise KeyError(f"no expectation for experiment {experiment!r} from {vantage} in "
                   f"{mode} mode ({hint})")


def _all_kind(sample: Sample, kinds: frozenset[str] | set[str], what: str) -> stats.Verdict:
    """Every request ended with one of `kinds` (and there was at least one request)."""
    counts = dict(sample.kinds())
    n = len(sample.records)
    bad = sum(v for k, v in counts.items() if k not in kinds)
    ok = n > 0 and bad == 0
    detail = (f"{n - bad} of {n} requests {what}; outcomes: {stats.format_counts(counts)}"
              if n else "no requests were made")
    return stats.Verdict(ok, detail, counts)


def check_outcome(outcome: str, sample: Sample, *, backends: set[str] | None = None,
                  own_ip: str | None = None) -> stats.Verdict:
    """Judge one outcome against a sample. `backends` is the expected set of
    server names; `own_ip` the vantage point's own address."""
    answered = dict(sample.backends())
    if outcome == ANSWERS:
        return _all_kind(sample, {"ok"}, "answered")
    if outcome == REFUSED:
        return _all_kind(sample, {K_REFUSED}, "were refused")
    if outcome == NO_ANSWER:
        return _all_kind(sample, NO_ANSWER_KINDS, "got no answer")
    if outcome == DROPPED:
        return _all_kind(sample, {TIMEOUT}, "timed out")
    if outcome == COVERED:
        if backends is None:
            raise ValueError(f"outcome {outcome!r} needs the expected backends")
        return stats.coverage(answered, backends)
    if outcome == UNIFORM:
        # A backend that never answers would also skew the shares, but naming
        # it outright is clearer than a p-value.
        cov = stats.coverage(answered, backends) if backends else None
        uni = stats.uniformity(answered, backends)
        if cov is None or cov.ok:
            return uni
        return stats.Verdict(False, f"{cov.detail}; {uni.detail}", uni.counts, uni.pvalue)
    if outcome == ROUND_ROBIN:
        return stats.round_robin(sample.order(), backends)
    if outcome == ONE_BACKEND:
        names = sorted(answered)
        ok = len(names) == 1 and (backends is None or names[0] in backends)
        return stats.Verdict(ok, f"{len(names)} backend(s) answered; counts: "
                                 f"{stats.format_counts(answered)}", answered)
    if outcome == SPREAD:
        all_ok = sample.records and len(sample.ok_records) == len(sample.records)
        ok = bool(all_ok) and len(answered) > 1
        return stats.Verdict(ok, f"{len(sample.ok_records)} of {len(sample.records)} "
                                 f"answered, by {len(answered)} backends; counts: "
                                 f"{stats.format_counts(answered)}", answered)
    if outcome in (HEALTHY, UNHEALTHY):
        want = 200 if outcome == HEALTHY else 503
        codes = Counter(r.status for r in sample.records)
        ok = bool(sample.records) and set(codes) == {want}
        return stats.Verdict(ok, f"HTTP status codes: {stats.format_counts(codes)} (want all {want})",
                             {str(k): v for k, v in codes.items()})
    if outcome in (CLIENT_IP_KEPT, CLIENT_IP_LOST):
        if not own_ip:
            raise ValueError(f"outcome {outcome!r} needs own_ip (the vantage point's address)")
        seen = dict(sample.client_ips())
        mine = seen.get(own_ip, 0)
        n = sum(seen.values())
        ok = n > 0 and (mine == n if outcome == CLIENT_IP_KEPT else mine == 0)
        return stats.Verdict(ok, f"{mine} of {n} answers saw our own IP {own_ip}; "
                                 f"client IPs seen: {stats.format_counts(seen)}", seen)
    raise ValueError(f"unknown outcome {outcome!r}; known: {sorted(OUTCOMES)}")


def check(experiment: str, vantage: str, mode: str, sample: Sample, *,
          backends: set[str] | None = None, own_ip: str | None = None) -> list[str]:
    """Compare the sample with the declared expectation.

    Returns evidence lines for the report; raises ExpectationFailed, showing
    expected and observed side by side, when any outcome is not met.
    """
    expect = expect_for(experiment, vantage, mode)
    verdicts = [(o, check_outcome(o, sample, backends=backends, own_ip=own_ip))
                for o in expect.outcomes]
    lines = [sample.summary()]
    lines += [f"{'ok  ' if v.ok else 'FAIL'} {o}: {v.detail}" for o, v in verdicts]
    lines += [f"  {line}" for line in sample.curl_lines(3)]
    if all(v.ok for _, v in verdicts):
        log.info("%s [%s, %s]: %s as expected", experiment, vantage, mode,
                 ", ".join(expect.outcomes))
        return lines
    message = "\n".join([
        f"{experiment} [{vantage}, {mode}]: {sample.describe()}",
        f"expected: {', '.join(expect.outcomes)} -- {expect.why}",
        *(f"  {'ok  ' if v.ok else 'FAIL'} {o}: {v.detail}" for o, v in verdicts),
        f"observed: {sample.summary()}",
        "first requests:",
        *(f"  {line}" for line in sample.curl_lines()),
        f"backends: {stats.format_counts(sample.backends())}",
        f"client IPs seen: {stats.format_counts(sample.client_ips())}",
    ])
    raise ExpectationFailed(message, lines)
