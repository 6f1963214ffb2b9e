"""kube-proxy's own view: its Prometheus metrics, read through the API server.

The benchmark's clusters bind kube-proxy's metrics server to the node address
(`metricsBindAddress: 0.0.0.0:10249`), and the harness reads
/metrics through the API server's proxy to each kube-proxy pod: the one path that
works wherever the nodes run (host engine, the guest's network the host has no
route into, or a cluster of one's own). Histograms are
compared between two snapshots: the difference is what happened in between
(e.g. the syncs that programmed the probe Services of one size).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families


METRICS_PORT = 10249
KUBE_PROXY_METRICS_CONFIG = {"metricsBindAddress": f"0.0.0.0:{METRICS_PORT}"}

SYNC = "kubeproxy_sync_proxy_rules_duration_seconds"
# Full syncs alone (iptables and nftables since 1.28; ipvs has no partial sync, so none there).
SYNC_FULL = "kubeproxy_sync_full_proxy_rules_duration_seconds"
NETPROG = "kubeproxy_network_programming_duration_seconds"
LAST_SYNC = "kubeproxy_sync_proxy_rules_last_timestamp_seconds"
LAST_QUEUED = "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds"
PENDING = ("kubeproxy_sync_proxy_rules_endpoint_changes_pending",
           "kubeproxy_sync_proxy_rules_service_changes_pending")
CPU = "process_cpu_seconds_total"
RSS = "process_resident_memory_bytes"
STARTED = "process_start_time_seconds"


@dataclass
class Histogram:
    """Cumulative buckets (upper bound -> count), as Prometheus exposes them."""
    buckets: dict[float, float] = field(default_factory=dict)
    count: float = 0.0
    sum: float = 0.0

    def minus(self, before: "Histogram") -> "Histogram":
        return Histogram({le: n - before.buckets.get(le, 0.0) for le, n in self.buckets.items()},
                         self.count - before.count, self.sum - before.sum)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """Prometheus' histogram_quantile: linear interpolation inside the bucket that holds q.
        An estimate bounded by the bucket edges; None without observations."""
        if self.count <= 0:
            return None
        rank = q * self.count
        lower, below = 0.0, 0.0
        for le in sorted(self.buckets):
            n = self.buckets[le]
            if n >= rank:
                if math.isinf(le):
                    return lower  # beyond the last finite bucket: its edge is all we know
                width = n - below
                return lower + (le - lower) * ((rank - below) / width if width else 1.0)
            lower, below = le, n
        return lower


@dataclass
class Snapshot:
    """One scrape of one kube-proxy."""
    node: str
    at: float                                   # host time.time() of the scrape
    histograms: dict[str, Histogram]
    gauges: dict[str, float]

    def pending(self) -> float:
        return sum(self.gauges.get(name, 0.0) for name in PENDING)


def parse(text: str, node: str = "", at: float = 0.0) -> Snapshot:
    """The metrics we use from a /metrics text (unlabelled series; labels are summed over)."""
    hists: dict[str, Histogram] = {}
    gauges: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.type == "histogram" and fam.name in (SYNC, SYNC_FULL, NETPROG):
            h = hists.setdefault(fam.name, Histogram())
            for s in fam.samples:
                if s.name.endswith("_bucket"):
                    le = float(s.labels["le"])
                    h.buckets[le] = h.buckets.get(le, 0.0) + s.value
                elif s.name.endswith("_count"):
                    h.count += s.value
                elif s.name.endswith("_sum"):
                    h.sum += s.value
        elif fam.name in (*PENDING, LAST_SYNC, LAST_QUEUED, CPU, RSS, STARTED) or fam.name + "_total" == CPU:
            for s in fam.samples:
                gauges[s.name] = gauges.get(s.name, 0.0) + s.value
    return Snapshot(node, at, hists, gauges)


def synced_since(snap: Snapshot, complete: float, written: float) -> bool:
    """Whether a kube-proxy has synced everything up to `complete` (when the EndpointSlices were
    seen complete; `written`: their last write, whole seconds from the API). Either it synced after
    `complete`, or its last sync came after its last queued change and that change came after the
    last write: kube-proxy 1.37 has no periodic resync, so one that synced the last change just
    before `complete` never syncs again (1.34 resynced every 30 s)."""
    last, queued = snap.gauges.get(LAST_SYNC, 0.0), snap.gauges.get(LAST_QUEUED, 0.0)
    return last > complete or (queued >= written > 0 and last >= queued)


def around_change(before: Snapshot, after: Snapshot, changed: float, answered: float | None) -> dict:
    """kube-proxy's syncs around one change: a Service created at `changed` (host time) and first
    answered at `answered`, scraped just before the create and just after the answer was seen.
    `syncs`: the syncs that ended in between, i.e. whether the Service and its EndpointSlice reached
    the data plane in one sync or two; `since_last_sync_s`: how long before the create the previous
    sync had ended (kube-proxy lets at least minSyncPeriod pass between the end of one sync and the
    start of the next)."""
    n = after.histograms.get(SYNC, Histogram()).count - before.histograms.get(SYNC, Histogram()).count
    last_before, last_after = before.gauges.get(LAST_SYNC), after.gauges.get(LAST_SYNC)
    return {"syncs": int(n),
            "since_last_sync_s": changed - last_before if last_before else None,
            # a sync that ended after the answer is in the count too: that sample's count is an upper bound
            "synced_after_answer": bool(answered is not None and last_after and last_after > answered)}


def first_sync(snap: Snapshot) -> dict | None:
    """A freshly started kube-proxy's first sync (the one that writes every Service's rules), or
    None before it ended. Its duration is exact while the histogram holds that one sync (the full-sync
    histogram where the mode has one: later partial syncs do not enter it); with more, None."""
    sync = snap.histograms.get(SYNC, Histogram())
    if sync.count < 1:
        return None
    full = snap.histograms.get(SYNC_FULL)
    first = full if full is not None and full.count >= 1 else sync
    started, last = snap.gauges.get(STARTED, 0.0), snap.gauges.get(LAST_SYNC, 0.0)
    return {"syncs_seen": int(sync.count),
            "first_sync_s": first.sum if first.count == 1 else None,
            # from the process's start to the end of its first sync: start-up, the informers' initial
            # lists and the sync itself (only while that sync is the last one)
            "start_to_synced_s": last - started if sync.count == 1 and started and last else None}


def scrape(api, node_name: str, pod: str, at: float) -> Snapshot:
    """One read of kube-proxy pod `pod` (on `node_name`) through `api` (a CoreV1Api)."""
    res = api.connect_get_namespaced_pod_proxy_with_path(
        f"{pod}:{METRICS_PORT}", "kube-system", "metrics", _preload_content=False, _request_timeout=20)
    return parse(res.data.decode(), node_name, at)


def histogram_summary(h: Histogram) -> dict:
    """count, mean and estimated p50/p95/p99 of a (difference) histogram, in seconds."""
    return {"count": int(h.count), "mean_s": h.mean, "p50_s": h.quantile(0.5),
            "p95_s": h.quantile(0.95), "p99_s": h.quantile(0.99)}


def between(before: Snapshot, after: Snapshot) -> dict:
    """What one kube-proxy did between two scrapes: sync and programming histograms, CPU, memory."""
    out = {"node": after.node, "seconds": after.at - before.at}
    for name, key in ((SYNC, "sync_proxy_rules"), (NETPROG, "network_programming")):
        if name in after.histograms:
            out[key] = histogram_summary(after.histograms[name].minus(before.histograms.get(name, Histogram())))
    out["cpu_seconds"] = after.gauges.get(CPU, 0.0) - before.gauges.get(CPU, 0.0)
    out["rss_bytes"] = after.gauges.get(RSS)
    return out
