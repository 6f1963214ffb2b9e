"""The scale benchmark: Service programming and first-packet latency against the number of Services.

One harness-made kind cluster per proxy mode, kube-proxy's metrics bound to the
node address. In one namespace, a 3-pod demo Deployment (on the client's node) and many ClusterIP
Services that all select it; the number of Services grows in steps (e.g. 100,
1000, 5000). At each size:

  programming     create one more Service (with a ClusterIP chosen up front)
                  while a client pod already polls that address; the latency is
                  from just before the create call to the poller's first answer
  first packet    through early and late Services against straight to a pod IP,
                  a new connection each time: connect() to SYN-ACK and to the first
                  byte in microseconds (harness.bench.firstpacket), and the whole
                  HTTP exchange in milliseconds (svc-probe)
  kube-proxy      its sync and network-programming histograms, CPU seconds and
                  resident memory, read through the API server (harness.bench.metrics)
  data plane      iptables rules / nft rules and map elements / ipvs virtual
                  services on the client's node (harness.modes.dataplane_size)

Before the first size, the probe's resolution is measured on the cluster
(firstpacket.resolution): back-to-back samples to a pod IP, and a deliberately
slowed path the probe must see.

A repeat grows the Services from zero again on the same cluster (the previous
ones deleted and gone from every kube-proxy). Every raw sample is kept.
"""
from __future__ import annotations

import contextvars
import json
import logging
import os
import platform
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from .. import assembly, config, engine, modes, progress
from ..cluster import KindCluster, claim_name
from ..kube import api_write
from ..lab import DEMO_PORT, ClusterHandle, Lab
from ..owners import Owner
from ..runner import CommandError, Step
from ..waits import Wait, WaitTimeout, slower
from . import firstpacket, metrics

log = logging.getLogger(__name__)

NAMESPACE = "bench-scale"
BENCH_LABEL = "svc-harness.io/bench"      # value: "bulk" or "probe"
POLL_LIMIT_S = 120                        # a programming sample gives up after this long
PROGRESS_EVERY_S = 30                     # a progress line while Services are created or deleted in bulk
# The EndpointSlice controller writes a slice per Service at its client's rate limit, 20 writes/s
# by default (kube-controller-manager --kube-api-qps): 25 minutes for 30 000 Services. The
# benchmark's clusters let it keep up with the bulk creation instead.
CONTROLLER_MANAGER_PATCH = ("kind: ClusterConfiguration\ncontrollerManager:\n  extraArgs:\n"
                            "    kube-api-qps: \"200\"\n    kube-api-burst: \"400\"\n")


def size_timeout(services: int, per_service_s: float) -> float:
    """A wait's limit at a size: 15 minutes, or longer where the Services need it."""
    return max(900.0, services * per_service_s)

# Runs inside the client pod, in the background: poll http://IP:PORT/ with a new connection each
# time until the first answer, then write "ok|timeout <start> <end> <attempts>" (epoch seconds;
# pod and host share one kernel clock). A not-yet-programmed ClusterIP is dropped by the node's
# Service-range sink, so each miss costs the 0.1 s connect timeout; a quick refusal (rules with no
# endpoints yet) is followed by a 20 ms pause so the loop stays cheap. Bounded by LIMIT seconds.
POLLER = r"""
ip=$1; port=$2; out=$3; limit=$4
start=$(date +%s.%N); n=0; end=$(( ${start%.*} + limit ))
while [ "$(date +%s)" -lt "$end" ]; do
  n=$((n+1))
  if curl -sf -o /dev/null --connect-timeout 0.1 -m 2 "http://$ip:$port/"; then
    echo "ok $start $(date +%s.%N) $n" > "$out.tmp"; mv "$out.tmp" "$out"; exit 0
  fi
  sleep 0.02
done
echo "timeout $start $(date +%s.%N) $n" > "$out.tmp"; mv "$out.tmp" "$out"
"""


@dataclass
class Options:
    modes: list[str]
    sizes: list[int]
    repeats: int = 2
    probes: int = 10                 # programming-latency samples per size and repeat
    fp_services: int = 3             # early and late Services sampled for first-packet latency
    fp_requests: int = 30            # requests per first-packet target
    fp_connects: int = 1000          # timed new connections per first-packet target
    slow_rules: int = firstpacket.SLOW_RULES  # non-matching rules of the resolution check's slowed path (0: none)
    cluster_prefix: str = "bench"
    worker_nodes: int = 1
    out: Path = Path("artifacts/bench")
    keep_clusters: bool = False
    create_workers: int = 8          # parallel API calls when creating/deleting Services
    engine: str = "auto"             # --ipvs-engine: where ipvs clusters run (harness.engine.choose)
    all_in_guest: bool = False       # --all-modes-in-guest: every mode in the UML guest
    guest: int = 0                   # --guest: which UML guest (0 = svc-harness-guest, 1 = ...-2, ...)
    max_load: float | None = None    # --max-load: first-packet timings wait for a 1-minute load at most this
    quiet_wait_s: float = 600        # ... for this long; then they are taken anyway and flagged
    restart_sync: bool = True        # restart kube-proxy at each size and time its first sync

    def record(self) -> dict:
        """The options as results.json keeps them."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    def engine_for(self, mode: str) -> engine.Engine:
        # Guest 1 and up are booted with the memory of several guests side by side.
        return engine.choose(mode, self.engine, every_mode_in_guest=self.all_in_guest,
                             slot=self.guest, guests=self.guest + 1)


def _done(resp) -> bytes:
    """Read an undecoded API answer to the end and hand its connection back to the pool
    (a connection returned with unread bytes would garble the next answer on it)."""
    try:
        return resp.data
    finally:
        resp.release_conn()


def _epoch(stamp: str | None) -> float:
    """An API timestamp ("2026-12-02T23:59:19Z") as epoch seconds; 0 for none."""
    from datetime import datetime
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else 0.0


def machine() -> dict:
    """What these numbers were measured on (they are this machine's, not general figures)."""
    model = ""
    try:
        model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                      if l.startswith("model name")), "")
    except OSError:
        pass
    mem = 0
    try:
        mem = int(next(l.split()[1] for l in Path("/proc/meminfo").read_text().splitlines()
                       if l.startswith("MemTotal"))) // 1024
    except (OSError, StopIteration, ValueError):
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_mib": mem, "kernel": platform.release(),
            "kubernetes": config.versions().get("KUBERNETES_VERSION", "")}


def loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return -1.0


class ScaleBench:
    """The measurements on one cluster (one proxy mode)."""

    def __init__(self, cluster: ClusterHandle, opts: Options):
        self.cluster, self.opts, self.mode = cluster, opts, cluster.mode
        self.lab = Lab(cluster, NAMESPACE)
        self.runner = cluster.runner
        # A client of our own with a connection pool as wide as our parallel calls.
        cfg = k8s.Configuration()
        k8s_config.load_kube_config(config_file=cluster.kube.kubeconfig, client_configuration=cfg)
        cfg.connection_pool_maxsize = max(4, opts.create_workers)
        self.api = k8s.CoreV1Api(k8s.ApiClient(cfg))
        self.discovery = k8s.DiscoveryV1Api(self.api.api_client)
        self._static_ips = self._static_band()
        self._probe_seq = 0
        self.slices_written = 0.0  # see ready_slices
        self._slices_seen_at = 0.0

    # ---- set-up ---------------------------------------------------------------
    def setup(self) -> None:
        self.cluster.kube.create_namespace(NAMESPACE)
        client_node = self.cluster.workers[0]
        # Every backend beside the client, in every cluster and engine (a guest cluster's control
        # plane takes pods too): a Service's path and the pod-IP baseline then differ only by the
        # Service, never by a hop between nodes.
        self.pods = self.lab.deploy_demoapp(replicas=3, on=client_node)
        self.client = self.lab.client(client_node, name="bench-client")
        self.client_node = self.cluster.node(self.client.node)
        if self.cluster.is_kind:
            engine.check_egress_guard(self.runner)

    def controller_manager_rate(self) -> list[str]:
        """The controller-manager's API rate flags as it runs (CONTROLLER_MANAGER_PATCH applied?)."""
        pods = self.api.list_namespaced_pod("kube-system", label_selector="component=kube-controller-manager").items
        return [a for p in pods for a in p.spec.containers[0].command or [] if a.startswith("--kube-api-")]

    def _static_band(self):
        """ClusterIPs we pick ourselves, from the range's low "static" band (KEP-3070), which the
        API server's random allocation avoids while the upper band has room."""
        net = self.cluster.service_cidrs()[0]
        used = {s.spec.cluster_ip for s in self.api.list_service_for_all_namespaces().items}
        band = min(max(16, net.num_addresses // 16), 256)
        for offset in range(20, band - 1):
            ip = str(net.network_address + offset)
            if ip not in used:
                yield ip

    # ---- Services ---------------------------------------------------------------
    def _body(self, name: str, kind: str, cluster_ip: str = "") -> dict:
        spec = {"type": "ClusterIP", "selector": {"app": "demoapp"},
                "ports": [{"name": "http", "protocol": "TCP", "port": DEMO_PORT, "targetPort": DEMO_PORT}]}
        if cluster_ip:
            spec["clusterIP"] = cluster_ip
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "labels": {BENCH_LABEL: kind}}, "spec": spec}

    def _create(self, name: str, kind: str, cluster_ip: str = "") -> None:
        # _preload_content=False: the answers are not needed, and decoding 5000 of them costs CPU
        api_write(lambda: _done(self.api.create_namespaced_service(
            NAMESPACE, self._body(name, kind, cluster_ip), _preload_content=False)), f"creating Service {name}",
            back=self.cluster.kube.wait_api_ready)

    def create_bulk(self, first: int, count: int) -> tuple[list[str], float]:
        """Create Services s<first>..s<first+count-1> with parallel API calls; (names, seconds)."""
        names = [f"s{i:05d}" for i in range(first, first + count)]
        self.lab.step(f"create {count} ClusterIP Services selecting app=demoapp "
                      f"({self.opts.create_workers} parallel API calls)")
        seconds = self._in_parallel(lambda n: self._create(n, "bulk"), names, "created")
        log.info("%s: created %d Services in %.1fs (%.0f/s)", self.mode, count, seconds,
                 count / seconds if seconds else 0)
        return names, seconds

    def _in_parallel(self, write, names: list[str], done_verb: str) -> float:
        """write(name) for every name with create_workers parallel API calls, with a progress line
        every PROGRESS_EVERY_S (30 000 Services take half an hour here); seconds taken."""
        started = said = time.monotonic()
        with ThreadPoolExecutor(self.opts.create_workers) as pool:
            # Each call in a copy of this thread's context, so its waits keep the engine's slowdown
            # (harness.waits.slower is a context variable, which pool threads do not inherit).
            calls = [pool.submit(contextvars.copy_context().run, write, n) for n in names]
            for done, _ in enumerate((c.result() for c in calls), 1):
                now = time.monotonic()
                if now - said >= PROGRESS_EVERY_S and done < len(names):
                    said = now
                    progress.emit(f"{self.mode}: {done} of {len(names)} Services {done_verb} "
                                  f"({done / (now - started):.0f}/s so far)")
        return time.monotonic() - started

    def delete_all(self) -> float:
        """Delete every bench Service and wait until kube-proxy has dropped them; seconds taken."""
        started = time.monotonic()
        names = [s["metadata"]["name"] for s in self._raw("list_namespaced_service", NAMESPACE,
                                                          label_selector=BENCH_LABEL)["items"]]
        self.lab.step(f"delete {len(names)} bench Services")
        self._in_parallel(lambda n: api_write(lambda: _done(self.api.delete_namespaced_service(
            n, NAMESPACE, _preload_content=False)), f"deleting Service {n}", "delete",
            back=self.cluster.kube.wait_api_ready), names, "deleted")
        # Their EndpointSlices (which carry the Services' labels) in one call: the garbage
        # collector alone removes them at ~13/s, 6 minutes for 5000 on this machine.
        api_write(lambda: _done(self.discovery.delete_collection_namespaced_endpoint_slice(
            NAMESPACE, label_selector=BENCH_LABEL, _preload_content=False)), "deleting the bench's EndpointSlices",
            "delete")
        self.settle(0)
        return time.monotonic() - started

    def _raw(self, method: str, *args, **kw) -> dict:
        """A list call decoded as plain JSON (the client's model objects are slow for 5000 items)."""
        api = self.discovery if "endpoint_slice" in method else self.api
        return json.loads(_done(getattr(api, method)(*args, _preload_content=False, **kw)))

    def ready_slices(self) -> int:
        """Bench Services whose EndpointSlices list a ready endpoint. Sets `slices_written`, a time
        no later than the last change to them that kube-proxy must see: the newest write of a
        slice, or with none left, the last listing that still had one (the last deletion came
        after it)."""
        svcs = set()
        written = 0.0
        listed_at = time.time()
        items = self._raw("list_namespaced_endpoint_slice", NAMESPACE, label_selector=BENCH_LABEL)["items"]
        for sl in items:
            name = sl["metadata"].get("labels", {}).get("kubernetes.io/service-name", "")
            for f in sl["metadata"].get("managedFields") or []:
                written = max(written, _epoch(f.get("time")))
            if any((e.get("conditions") or {}).get("ready") for e in sl.get("endpoints") or []):
                svcs.add(name)
        if items:
            self._slices_seen_at = listed_at
        self.slices_written = written if items else self._slices_seen_at
        return len(svcs)

    def settle(self, services: int) -> float:
        """Wait until `services` bench Services have ready EndpointSlices and every kube-proxy has
        synced after that with nothing pending; returns when the slices were complete (time.time)."""
        Wait(f"{services} bench Services with ready EndpointSlices (seen: how many)",
             timeout=size_timeout(services, 0.06), interval=2.0).until(self.ready_slices, lambda n: n == services)
        complete = time.time()

        written = self.slices_written

        def synced():
            return {s.node: (s.pending(), metrics.synced_since(s, complete, written)) for s in self.scrape()}

        Wait("every kube-proxy to sync after the EndpointSlices were complete, nothing pending "
             "(seen: node -> (pending changes, synced since))", timeout=size_timeout(services, 0.03),
             interval=1.0).until(
            synced, lambda seen: all(p == 0 and after for p, after in seen.values()))
        return complete

    # ---- measurements ---------------------------------------------------------------
    def scrape(self, nodes: list[str] | None = None) -> list[metrics.Snapshot]:
        """kube-proxy's metrics on `nodes` (default: every node)."""
        now = time.time()
        nodes = nodes or [n.name for n in self.cluster.nodes]
        pods = {p.spec.node_name: p.metadata.name for p in self.api.list_namespaced_pod(
            "kube-system", label_selector=modes.KUBE_PROXY_SELECTOR).items if not p.metadata.deletion_timestamp}
        missing = [n for n in nodes if n not in pods]
        if missing:
            raise RuntimeError(f"expected a kube-proxy pod on every node; none on {missing} (seen: {pods})")
        return [metrics.scrape(self.api, n, pods[n], now) for n in nodes]

    def programming_sample(self, services_before: int) -> dict:
        """Create one more Service and time until the client pod first gets an answer through it."""
        ip = next(self._static_ips)
        self.lab.assert_local(ip)
        if self.cluster.is_kind:
            engine.check_egress_guard(self.runner)
        self._probe_seq += 1
        name = f"p{self._probe_seq:04d}"
        out = f"/tmp/bench-{name}"
        self.client.exec(["bash", "-c", f"nohup bash -c {shlex.quote(POLLER)} _ {ip} {DEMO_PORT} {out} "
                                        f"{POLL_LIMIT_S} </dev/null >/dev/null 2>&1 &"])
        [proxy_before] = self.scrape([self.client.node])
        t0 = time.time()
        self._create(name, "probe", ip)
        api_s = time.time() - t0
        line = Wait(f"the poller in {self.client.describe()} to report on new Service {name} ({ip}) "
                    f"(seen: its output)", timeout=POLL_LIMIT_S + 30, interval=1.0).until(
            lambda: self.client.exec(["cat", out], check=False).stdout.strip(), bool)
        [proxy_after] = self.scrape([self.client.node])
        status, start, end, attempts = line.split()
        answered = float(end) if status == "ok" else None
        return {"service": name, "cluster_ip": ip, "services_before": services_before, "status": status,
                "latency_s": answered - t0 if answered else None, "api_call_s": api_s,
                "poller_started_before_create": float(start) <= t0, "attempts": int(attempts),
                "kube_proxy": metrics.around_change(proxy_before, proxy_after, t0, answered)}

    def first_packet(self, created: list[str]) -> dict:
        """Connect + first response through early and late Services vs a pod IP directly."""
        k = self.opts.fp_services
        early, late = created[:k], created[-k:] if len(created) > k else []
        positions = {}
        if self.mode == "iptables":
            positions = modes.kube_services_positions(
                self.client_node.exec(["iptables-save", "-t", "nat"], timeout=120).stdout)
        pod = self.pods[0]
        targets = [("pod", pod.name, pod.ip)]
        for group, names in (("early", early), ("late", late)):
            for n in names:
                targets.append((group, n, self.api.read_namespaced_service(n, NAMESPACE).spec.cluster_ip))
        targets.append(("pod", pod.name, pod.ip))
        out = []
        for group, name, ip in targets:
            sample = self.lab.probe(self.client, ip, DEMO_PORT, n=self.opts.fp_requests, timeout_s=5.0)
            timed = firstpacket.sample(self.client, ip, DEMO_PORT, self.opts.fp_connects)
            failures = {k: v for k, v in sample.kinds().items() if k != "ok"}
            for k, v in timed.failures.items():
                failures[f"connect {k}"] = v
            out.append({"group": group, "target": name, "ip": ip, "rule_position": positions.get(ip),
                        "latency_ms": [r.latency_ms for r in sample.records if r.ok],
                        "connect_us": timed.connect_us, "first_byte_us": timed.first_byte_us,
                        "failures": failures})
        return {"targets": out, "kube_services_rules": len(positions) or None}

    def restart_sync(self, services: int) -> dict:
        """Restart kube-proxy on the client's node with every Service of the size in place, and
        read its first sync (the one that writes every Service's rules from nothing in its
        memory; kubernetes PR #130119 measured it at 10 000 Services)."""
        t0 = time.time()
        pod = modes.restart_on(self.cluster.kube, self.client.node)
        running_s = time.time() - t0
        limit = size_timeout(services, 0.06)
        try:
            first = Wait(f"the new kube-proxy {pod} on {self.client.node} to finish its first sync "
                         f"(seen: its metrics)", timeout=limit, interval=0.5).until(
                lambda: metrics.first_sync(metrics.scrape(self.api, self.client.node, pod, time.time())),
                lambda seen: seen is not None)
        except WaitTimeout:
            # A result too (a lower bound), not a failure: the sizes measured before it stay.
            log.warning("%s: kube-proxy %s had not finished its first sync after %.0f s; recorded as unfinished",
                        self.mode, pod, limit)
            return {"pod": pod, "node": self.client.node, "delete_to_running_s": running_s,
                    "unfinished_after_s": time.time() - t0}
        out = {"pod": pod, "node": self.client.node, "delete_to_running_s": running_s,
               "delete_to_synced_s": time.time() - t0, **first}
        log.info("%s: kube-proxy restarted on %s: first sync %s s (start to synced %s s)", self.mode,
                 self.client.node, first["first_sync_s"], first["start_to_synced_s"])
        return out

    def dataplane(self, services: int) -> dict:
        """The client node's data-plane size. A count that does not come back in time is recorded, not
        fatal: `nft -j list` did not finish in 120 s at 30 000 Services, and that ended a whole run."""
        try:
            return modes.dataplane_size(self.client_node, self.mode, timeout=max(120.0, services * 0.01))
        except CommandError as e:
            log.warning("%s: data-plane size not counted: %s", self.mode, str(e).splitlines()[0])
            return {"error": str(e).splitlines()[0][:300], "timed_out": e.result.returncode == 124}

    def wait_quiet(self) -> dict | None:
        """With --max-load: wait (bounded) until the machine's 1-minute load is at most that, since
        microsecond timings on a busy machine measure the other work; what was seen is recorded,
        and a sample taken above the limit is flagged in the results."""
        if self.opts.max_load is None:
            return None
        started = time.monotonic()
        try:
            Wait(f"the 1-minute load average to fall to {self.opts.max_load}",
                 timeout=self.opts.quiet_wait_s, interval=min(5.0, self.opts.quiet_wait_s / 10)).until(loadavg, lambda v: 0 <= v <= self.opts.max_load)
            quiet = True
        except WaitTimeout:
            log.warning("load still above %s after %.0fs: first-packet timings taken anyway and flagged",
                        self.opts.max_load, self.opts.quiet_wait_s)
            quiet = False
        return {"max_load": self.opts.max_load, "load": loadavg(), "quiet": quiet,
                "waited_s": round(time.monotonic() - started, 1)}

    def grow(self, repeat: int, measured=lambda steps: None) -> list[dict]:
        """One repeat: grow to each size and measure there; `measured(steps)` after each size."""
        steps = []
        created: list[str] = []
        probes_made = 0
        for size in sorted(self.opts.sizes):
            have = len(created) + probes_made
            step = {"size": size, "loadavg_start": loadavg()}
            before = self.scrape()
            t_create = time.time()
            names, seconds = self.create_bulk(len(created), max(0, size - have))
            created += names
            complete = self.settle(len(created) + probes_made)
            mid = self.scrape()
            step.update(created=len(names), create_seconds=seconds,
                        create_rate_per_s=len(names) / seconds if seconds else None,
                        slices_ready_after_s=complete - t_create,
                        settled_after_s=mid[0].at - t_create,
                        bulk_kube_proxy=[metrics.between(b, a) for b, a in zip(before, mid)])
            with Step(f"{self.mode} r{repeat} size {size}: data-plane size"):
                step["dataplane"] = self.dataplane(size)
            step["load_gate"] = self.wait_quiet()
            with Step(f"{self.mode} r{repeat} size {size}: first-packet latency"):
                step["first_packet"] = self.first_packet(created)
            before_probe = self.scrape()
            with Step(f"{self.mode} r{repeat} size {size}: programming latency x{self.opts.probes}"):
                step["programming"] = [self.programming_sample(size + i) for i in range(self.opts.probes)]
            probes_made += self.opts.probes
            after = self.scrape()
            step["probe_kube_proxy"] = [metrics.between(b, a) for b, a in zip(before_probe, after)]
            if self.opts.restart_sync:
                with Step(f"{self.mode} r{repeat} size {size}: kube-proxy restart, first sync"):
                    step["restart"] = self.restart_sync(size)
            step["client_node"] = self.client.node
            step["loadavg_end"] = loadavg()
            lat = sorted(p["latency_s"] for p in step["programming"] if p["latency_s"] is not None)
            log.info("%s r%d size %d: programming latency %s s; data plane %s", self.mode, repeat, size,
                     ", ".join(f"{x:.2f}" for x in lat), step["dataplane"])
            steps.append(step)
            measured(steps)
        return steps


def measure_mode(mode: str, opts: Options) -> dict:
    """Make the mode's cluster, run every repeat on it, delete it (unless kept)."""
    eng = opts.engine_for(mode)
    reason = eng.unavailable_reason(mode)
    if reason:
        raise engine.PreflightError(f"{mode}: {reason}")
    owner = Owner.of()
    name = claim_name(f"{opts.cluster_prefix}-{mode}", owner, eng)
    run_key = f"bench-{os.getpid()}"
    handle = None
    result = {"mode": mode, "cluster": name, "engine": eng.describe(), "repeats": []}
    drops_before = eng.guard_drops()
    kc = None
    try:
        out = assembly.build(assembly.Recipe(
            name=name, mode=mode, engine=eng, owner=owner, run_key=run_key,
            workers=opts.worker_nodes, kube_proxy_extra=dict(metrics.KUBE_PROXY_METRICS_CONFIG),
            kubeadm_patches=[CONTROLLER_MANAGER_PATCH]))
        kc = out.kind
        result["engine"] = eng.describe()  # again: a guest knows its kernel once it is up
        result["node_image"] = out.node_image
        result["cluster_create_s"] = kc.create_seconds
        result["assembly_s"] = out.timings
        handle = out.handle(mode)
        bench = ScaleBench(handle, opts)
        bench.setup()
        result["controller_manager_rate"] = bench.controller_manager_rate()
        result["placement"] = {"client": bench.client.node,
                               "backends": {p.name: {"node": p.node, "ip": p.ip} for p in bench.pods}}
        bench.lab.assert_local(bench.pods[0].ip)
        with Step(f"{mode}: the first-packet probe's resolution"):
            result["resolution"] = firstpacket.resolution(bench.client, bench.client_node, bench.pods[0].ip,
                                                          DEMO_PORT, opts.fp_connects, opts.slow_rules)
        for r in range(opts.repeats):
            started = time.monotonic()
            # Each size is kept as soon as it is measured: a 30 000-Service repeat ran for 1.5 hours.
            steps = bench.grow(r, lambda so_far: write_partial(opts, {
                **result, "repeats": result["repeats"] + [{"repeat": r, "steps": so_far, "incomplete": True}]}))
            rec = {"repeat": r, "steps": steps}
            if r < opts.repeats - 1:  # the next repeat starts from zero; after the last, the cluster goes
                rec["delete_s"] = bench.delete_all()
            rec["seconds"] = time.monotonic() - started
            result["repeats"].append(rec)
            write_partial(opts, result)
    finally:
        if handle:
            handle.close()
        if not opts.keep_clusters:
            KindCluster.ours(name, owner).delete()
        eng.release(run_key, keep=opts.keep_clusters)
    # The guard's counter is machine-wide (other runs share it): a difference, expected 0.
    result["egress_guard_drops"] = eng.guard_drops() - drops_before
    return result


def write_partial(opts: Options, result: dict) -> None:
    """Keep what was measured so far (a long run may be cut short)."""
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / f"partial-{result['mode']}.json").write_text(json.dumps(result, indent=1))


def run(opts: Options) -> dict:
    started, t0 = time.time(), time.monotonic()
    data = {"benchmark": "scale", "started": started, "machine": machine(),
            "options": opts.record(),
            "modes": []}
    from . import results
    for mode in opts.modes:
        with Step(f"scale benchmark, {mode} mode, sizes {opts.sizes}, {opts.repeats} repeat(s)") as st, \
                slower(opts.engine_for(mode).slowdown):
            res = measure_mode(mode, opts)
        res["seconds"] = st.seconds
        data["modes"].append(res)
        data["seconds"] = time.monotonic() - t0
        results.write(data, opts.out)  # what is done so far survives a later mode's failure
    return data
