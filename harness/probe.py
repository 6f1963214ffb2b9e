"""Traffic samples: many requests from one vantage point in one exec.

The `svc-probe` program (images/tools/probe) runs inside the vantage point and
prints one JSON record per request; this module turns that into a `Sample`.
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
    def parse(cls, source: str, target: str, stdout: str, seconds: float = 0.0) -> "Sample":
        recs = []
        for line in stdout.splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            d = json.loads(line)
            recs.append(ProbeRecord(**{k: d[k] for k in ProbeRecord.__dataclass_fields__ if k in d}))
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
    res = peer.exec(argv, timeout=max_duration_s + 30)
    sample = Sample.parse(peer.describe(), url, res.stdout, time.monotonic() - started)
    log.info("%s", sample.summary())
    return sample
