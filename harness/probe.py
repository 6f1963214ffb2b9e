"""Traffic samples: many requests from one vantage point in one exec.

The `svc-probe` program (images/tools/probe) runs inside the vantage point and
prints one JSON record per request, then an end line with their count; this module
turns that into a `Sample`. `kubectl exec` can cut stdout short and still exit 0
(kubernetes/kubernetes#124571): an answer without its end line was lost on the way, not
observed, so `probe_records` runs the probe once more and then gives up with an error.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

PROBE_BIN = "/usr/local/bin/svc-probe"

# Failure kinds the probe reports; "ok" means a 2xx answer.
OK, HTTP, REFUSED, TIMEOUT, RESET, UNREACHABLE, OTHER = (
    "ok", "http", "refused", "timeout", "reset", "unreachable", "other")

PROBE_ATTEMPTS = 2  # a second exec only when the first one's output was cut short


class ProbeOutputLost(RuntimeError):
    """The probe's output did not arrive whole (no end line, or fewer records than it counted)."""


def read_records(stdout: str) -> list[dict]:
    """The JSON records of one probe run; ProbeOutputLost unless its end line closes them."""
    recs, end = [], None
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            raise ProbeOutputLost(f"a record was cut in the middle: {line[:120]!r}") from None
        if "end" in d:
            end = d["end"]
        else:
            recs.append(d)
    if end is None or end != len(recs):
        raise ProbeOutputLost(f"expected the probe's records and an end line counting them; got "
                              f"{len(recs)} record(s) and {'no end line' if end is None else f'end={end}'} "
                              f"in {len(stdout)} bytes of output")
    return recs


def probe_records(peer, argv: list[str], timeout: float) -> list[dict]:
    """Run the probe `argv` in `peer` and return its records (see the module docstring)."""
    for attempt in range(1, PROBE_ATTEMPTS + 1):
        res = peer.exec(argv, timeout=timeout)
        try:
            return read_records(res.stdout)
        except ProbeOutputLost as e:
            if attempt == PROBE_ATTEMPTS:
                raise ProbeOutputLost(f"{peer.describe()}: {' '.join(argv)}: output lost {attempt} times "
                                      f"in a row; last time: {e}; stderr: {res.stderr.strip()[-300:]!r}") from None
            log.warning("%s: the probe's output arrived incomplete (%s); running it once more", peer.describe(), e)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class ProbeRecord:
    """One request: what the server said about itself and about us."""
    i: int
    kind: str
    status: int = 0
    server_name: str = ""
    client_ip: str = ""
    server_ip: str = ""
    latency_ms: float = 0.0
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.kind == OK


@dataclass(repr=False)
class Sample:
    """The records of one probe run, with where it came from and went to."""
    source: str            # vantage point, e.g. "client-pod@kind-worker (10.244.1.5)"
    target: str            # e.g. "10.96.12.7:80"
    records: list[ProbeRecord] = field(default_factory=list)
    seconds: float = 0.0   # wall time of the whole exec

    @classmethod
    def from_records(cls, source: str, target: str, records: list[dict], seconds: float = 0.0) -> "Sample":
        recs = [ProbeRecord(**{k: d[k] for k in ProbeRecord.__dataclass_fields__ if k in d}) for d in records]
        return cls(source=source, target=target, records=recs, seconds=seconds)

    # --- views used by expectations, stats and the report ---
    @property
    def ok_records(self) -> list[ProbeRecord]:
        return [r for r in self.records if r.ok]

    def kinds(self) -> Counter:
        return Counter(r.kind for r in self.records)

    def backends(self) -> Counter:
        """Answers per server name (successful requests only)."""
        return Counter(r.server_name for r in self.ok_records)

    def client_ips(self) -> Counter:
        return Counter(r.client_ip for r in self.ok_records)

    def order(self) -> list[str]:
        """Server names in request order (successful requests only)."""
        return [r.server_name for r in sorted(self.ok_records, key=lambda r: r.i)]

    @property
    def requests_per_second(self) -> float:
        return len(self.records) / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        return f"{self.source} -> {self.target}"

    def __repr__(self) -> str:  # waits print the last sample they saw
        return f"<Sample {self.summary()}>"

    def summary(self) -> str:
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(self.kinds().items()))
        backends = ", ".join(f"{k}={v}" for k, v in sorted(self.backends().items()))
        return (f"{self.describe()}: {len(self.records)} requests in {self.seconds:.2f}s "
                f"({self.requests_per_second:.0f} req/s); outcomes: {kinds or 'none'}; "
                f"backends: {backends or 'none'}")

    def curl_lines(self, n: int = 5) -> list[str]:
        """The first answers in the article's shape (its `curl` loop output)."""
        out = []
        for r in sorted(self.records, key=lambda r: r.i)[:n]:
            if r.ok:
                out.append(f"iKubernetes demoapp v1.0 !! ClientIP: {r.client_ip}, "
                           f"ServerName: {r.server_name}, ServerIP: {r.server_ip}!")
            else:
                out.append(f"<{r.kind}: {r.error}>")
        return out


def probe_argv(url: str, n: int, timeout_s: float = 2.0, concurrency: int = 1,
               max_duration_s: float = 120.0) -> list[str]:
    """The command a vantage point runs for one sample (bounded in count and time)."""
    return [PROBE_BIN, "-url", url, "-n", str(n), "-timeout", f"{timeout_s}s",
            "-concurrency", str(concurrency), "-max-duration", f"{max_duration_s}s"]


def run_probe(peer, url: str, n: int = 1, timeout_s: float = 2.0, concurrency: int = 1,
              max_duration_s: float = 120.0) -> Sample:
    """Send `n` requests to `url` from `peer` (see harness.peers) in one exec."""
    argv = probe_argv(url, n, timeout_s, concurrency, max_duration_s)
    started = time.monotonic()
    records = probe_records(peer, argv, timeout=max_duration_s + 30)
    sample = Sample.from_records(peer.describe(), url, records, time.monotonic() - started)
    log.info("%s", sample.summary())
    return sample
