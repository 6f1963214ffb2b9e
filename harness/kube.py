"""Kubernetes API helpers: reads through the official client, writes through kubectl.

Writes go through `kubectl` (via the runner seam) so each one is logged as a
command a user can paste; reads use the Python client, which is faster to poll.
"""
from __future__ import annotations

import json
import logging
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from . import config
from .runner import DEFAULT, CommandError, Result, Runner
from .waits import Wait, scaled

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PodInfo:
    name: str
    ip: str
    node: str
    ready: bool


def load_manifest(name: str, **values) -> list[dict]:
    """manifests/<name>.yaml with ${placeholders} filled in, as a list of objects."""
    text = (config.MANIFESTS / f"{name}.yaml").read_text()
    text = string.Template(text).substitute({k: str(v) for k, v in values.items()})
    return [d for d in yaml.safe_load_all(text) if d]


# kubectl's messages for a request that never reached the API server (the connection or its TLS
# handshake did not complete): repeating such a command cannot do anything twice. A guest
# cluster's API server, busy on its one slow CPU, misses kubectl's fixed 10 s handshake limit now
# and then, and restarts when a post-start hook times out (docs/ipvs-guest.md).
# Only kubectl's own words, read on stderr: an exec'd workload may print "connection refused" itself,
# so a refused connection counts only when it names this cluster's API server.
UNREACHED = ("TLS handshake timeout", "Unable to connect to the server", "The connection to the server",
             "failed to download openapi")
UNREACHED_ATTEMPTS = 3
API_BACK_TIMEOUT = 120  # seconds (scaled like every wait) for an unreached API server to answer again


def unreached(result: Result, server: str = "") -> bool:
    """Whether a failed kubectl never reached the API server (so running it again is safe);
    `server` is its host:port, for kubectl's "dial tcp <server>: connect: connection refused"."""
    text = result.stderr
    refused = bool(server) and f"dial tcp {server}: connect: connection refused" in text
    return not result.ok and result.returncode != 124 and (refused or any(m in text for m in UNREACHED))


# How the API server says a write did not reach its storage in time (etcd starved of CPU or disk,
# seen in the guest while host suites ran beside it). Whether the object was written is unknown, so
# a retried create that meets AlreadyExists, or a delete that meets NotFound, is done.
STORAGE_TIMEOUTS = ("etcdserver: request timed out", "etcdserver: leader changed",
                    "etcdserver: too many requests")
BUSY_STATUSES = (429, 500, 503, 504)  # throttled, or the server gave up on the request itself
SETTLED = {"create": 409, "delete": 404}  # what a retry meets when an earlier attempt went through
API_WRITE_TIMEOUT = 120  # seconds (scaled like every wait) for a busy API server to take a write


def storage_timed_out(result: Result) -> bool:
    """Whether a failed kubectl write met the API server's "could not store it in time"."""
    return not result.ok and any(m in result.stderr for m in STORAGE_TIMEOUTS)


def busy(error: k8s.ApiException) -> bool:
    """Whether an API error says "not now" (a retry may succeed) rather than "not this"."""
    return error.status in BUSY_STATUSES or any(m in (error.body or "") for m in STORAGE_TIMEOUTS)


def api_write(call, what: str, verb: str = "create", timeout: float = API_WRITE_TIMEOUT,
              back: Callable[[], None] | None = None):
    """`call()` (one client write); again while the API server answers "busy" or cannot be reached
    (refused or reset: kubelet restarting an overloaded API server), until `timeout`. Any other
    error is raised at once. `back()`, when given, waits for an unreachable API server to be ready
    again before the next attempt (a restarted one refuses writes with 403 until its RBAC is
    loaded); that wait has its own deadline on top of `timeout`."""
    retried: list[str] = []
    deadline_extra = API_BACK_TIMEOUT if back else 0

    def again(seen: str, why: str):
        retried.append(seen)
        log.warning("%s: the API server %s (attempt %d): %s", what, why, len(retried), seen)
        return False, seen

    def attempt():
        try:
            return True, call()
        except k8s.ApiException as e:
            if retried and e.status == SETTLED.get(verb):
                log.info("%s: an earlier attempt went through (%s on retry)", what, e.status)
                return True, None
            if not busy(e):
                raise
            return again(f"{e.status} {(e.body or e.reason or '').strip()[:200]}", "is busy")
        except urllib3.exceptions.HTTPError as e:  # the client's transport: refused, reset, timed out
            out = again(f"{type(e).__name__}: {str(e)[:200]}", "cannot be reached")
            if back:
                back()
            return out

    return Wait(f"the API server to take {what}", timeout=timeout + deadline_extra, interval=1.0,
                transient=()).until(attempt, lambda r: r[0])[1]


class Kube:
    def __init__(self, kubeconfig: Path | str, runner: Runner = DEFAULT, context: str | None = None):
        self.kubeconfig = str(kubeconfig)
        self.context = context
        self.runner = runner
        api = k8s_config.new_client_from_config(config_file=self.kubeconfig, context=context)
        self.server = api.configuration.host.split("://", 1)[-1].rstrip("/")  # host:port
        self.core = k8s.CoreV1Api(api)
        self.apps = k8s.AppsV1Api(api)
        self.discovery = k8s.DiscoveryV1Api(api)
        self.custom = k8s.CustomObjectsApi(api)
        self.version = k8s.VersionApi(api)

    # ---- writes (kubectl) ----------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120,
                what: str = "", idempotent: bool = False) -> Result:
        """Run kubectl; a command that never reached the API server runs again (at most
        UNREACHED_ATTEMPTS times in all, each with `timeout`). An `idempotent` write that the API
        server could not store in time (STORAGE_TIMEOUTS) runs again until API_WRITE_TIMEOUT: doing
        it twice is the same as once."""
        ctx = ["--context", self.context] if self.context else []
        argv = [config.tool("kubectl"), "--kubeconfig", self.kubeconfig, *ctx, *args]
        if idempotent:
            res = Wait(f"the API server to store `{what or ' '.join(args[:4])}` (etcd timed out on it)",
                       timeout=API_WRITE_TIMEOUT, interval=2.0, transient=()).until(
                lambda: self._reaching(argv, input, timeout, what), lambda r: not storage_timed_out(r))
        else:
            res = self._reaching(argv, input, timeout, what)
        if check and not res.ok:
            raise CommandError(res, what)
        return res

    def _reaching(self, argv: list[str], input: str | None, timeout: float, what: str) -> Result:
        """One kubectl command, again (a bounded number of times) while it never reached the server."""
        for attempt in range(1, UNREACHED_ATTEMPTS + 1):
            res = self.runner.run(argv, input=input, check=False, timeout=timeout, what=what)
            if not unreached(res, self.server) or attempt == UNREACHED_ATTEMPTS:
                break
            log.warning("kubectl did not reach the API server %s (attempt %d of %d); again once it answers "
                        "/readyz: %s", self.server, attempt, UNREACHED_ATTEMPTS, res.stderr.strip()[-300:])
            self.wait_api_ready()
        return res

    def wait_api_ready(self) -> None:
        """Until the API server answers /readyz (after a restart it refuses connections, then
        misses TLS handshakes, for a minute or more in the guest)."""
        ctx = ["--context", self.context] if self.context else []
        argv = [config.tool("kubectl"), "--kubeconfig", self.kubeconfig, *ctx, "get", "--raw=/readyz",
                "--request-timeout=10s"]
        Wait(f"the API server {self.server} to answer /readyz", timeout=API_BACK_TIMEOUT, interval=2.0).until(
            lambda: self.runner.run(argv, check=False, timeout=30, what="API server /readyz"),
            lambda res: res.ok)

    def apply(self, objs: list[dict] | dict, namespace: str | None = None, check: bool = True) -> Result:
        objs = objs if isinstance(objs, list) else [objs]
        ns = ["-n", namespace] if namespace else []
        return self.kubectl(*ns, "apply", "-f", "-", input=yaml.safe_dump_all(objs), check=check,
                            what="kubectl apply", idempotent=True)

    def create_namespace(self, name: str) -> None:
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": name, "labels": {"app.kubernetes.io/managed-by": "svc-harness"}}})

    def delete_namespace(self, name: str) -> None:
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False,
                     idempotent=True)

    def scale(self, deployment: str, replicas: int, namespace: str) -> None:
        self.kubectl("-n", namespace, "scale", f"deployment/{deployment}", f"--replicas={replicas}",
                     idempotent=True)

    def patch(self, kind: str, name: str, namespace: str, patch: dict, check: bool = True,
              type_: str = "merge") -> Result:
        # A merge patch sets fields (twice = once); a JSON patch may add to a list.
        return self.kubectl("-n", namespace, "patch", kind, name, "--type", type_, "-p",
                            json.dumps(patch), check=check, idempotent=type_ != "json")

    def rollout(self, deployment: str, namespace: str, timeout: int = config.ROLLOUT_TIMEOUT) -> None:
        timeout = scaled(timeout)
        self.kubectl("-n", namespace, "rollout", "status", f"deployment/{deployment}", f"--timeout={timeout}s",
                     timeout=timeout + 30, what=f"rollout of {deployment}")

    def wait_pod_ready(self, pod: str, namespace: str, timeout: int = config.ROLLOUT_TIMEOUT) -> None:
        timeout = scaled(timeout)
        self.kubectl("-n", namespace, "wait", "--for=condition=Ready", f"pod/{pod}", f"--timeout={timeout}s",
                     timeout=timeout + 30, what=f"pod {pod} Ready")

    def exec(self, pod: str, namespace: str, argv: list[str], timeout: float = 120, check: bool = True) -> Result:
        return self.kubectl("-n", namespace, "exec", pod, "--", *argv, timeout=timeout, check=check,
                            what=f"exec in pod {namespace}/{pod}")

    # ---- reads (client) -------------------------------------------------
    def server_version(self) -> str:
        """The API server's release, e.g. "v1.37.2"."""
        return self.version.get_code().git_version

    def service(self, name: str, namespace: str) -> k8s.V1Service:
        return self.core.read_namespaced_service(name, namespace)

    def pods(self, selector: str, namespace: str) -> list[PodInfo]:
        out = []
        for p in self.core.list_namespaced_pod(namespace, label_selector=selector).items:
            if p.metadata.deletion_timestamp:
                continue
            ready = any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
            out.append(PodInfo(p.metadata.name, p.status.pod_ip or "", p.spec.node_name or "", ready))
        return sorted(out, key=lambda p: p.name)

    def ready_pods(self, selector: str, namespace: str) -> list[PodInfo]:
        return [p for p in self.pods(selector, namespace) if p.ready and p.ip]

    def endpoints(self, service: str, namespace: str) -> set[str]:
        """Ready addresses of the Endpoints object named like the Service, as ip:port."""
        ep = self.core.read_namespaced_endpoints(service, namespace)
        out = set()
        for s in ep.subsets or []:
            for a in s.addresses or []:
                for p in s.ports or []:
                    out.add(f"{a.ip}:{p.port}")
        return out

    def endpoint_slices(self, service: str, namespace: str, ready_only: bool = True) -> set[str]:
        """Endpoints over all EndpointSlices of the Service, as ip:port: the ready ones, or (with
        ready_only=False) every one listed, terminating pods included."""
        out = set()
        slices = self.discovery.list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={service}")
        for sl in slices.items:
            ports = [p.port for p in (sl.ports or [])]
            for e in sl.endpoints or []:
                if not ready_only or e.conditions is None or e.conditions.ready is not False:
                    for ip in e.addresses:
                        for port in ports:
                            out.add(f"{ip}:{port}")
        return out

    def event_messages(self, name: str, namespace: str, reason: str) -> list[str]:
        """Messages of the events with this reason about object `name`, oldest first."""
        items = self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name},reason={reason}").items
        def when(e):
            return e.last_timestamp or e.event_time or e.metadata.creation_timestamp
        return [e.message or "" for e in sorted(items, key=when)]

    def endpoints_line(self, service: str, namespace: str) -> str:
        """The Endpoints line as `kubectl describe service` prints it."""
        eps = sorted(self.endpoints(service, namespace))
        return "Endpoints:         " + (",".join(eps) if eps else "<none>")

    def logs(self, pod: str, namespace: str, tail: int = 50, container: str | None = None) -> str:
        kw = {"tail_lines": tail}
        if container:
            kw["container"] = container
        return self.core.read_namespaced_pod_log(pod, namespace, **kw)

    # ---- waits ------------------------------------------------------------
    def wait_endpoints(self, service: str, namespace: str, selector: str, port: int,
                       replicas: int | None = None, timeout: float = config.ENDPOINTS_TIMEOUT) -> set[str]:
        """Wait until Endpoints and EndpointSlices both equal the ready pods' ip:port
        (and, if given, there are exactly `replicas` of them)."""
        # Terminating pods must be gone from the slices too: with no ready endpoint left,
        # kube-proxy still sends traffic to terminating ones (KEP-1669).
        def observe():
            want = {f"{p.ip}:{port}" for p in self.ready_pods(selector, namespace)}
            return (want, self.endpoints(service, namespace), self.endpoint_slices(service, namespace),
                    self.endpoint_slices(service, namespace, ready_only=False))

        want, *_ = Wait(f"Endpoints and EndpointSlices of {namespace}/{service} to equal the ready pods "
                          f"({selector}, replicas={replicas}); seen as (pods, Endpoints, ready slices, all slices)", timeout=timeout).until(
            observe, lambda o: o[0] == o[1] == o[2] == o[3] and (replicas is None or len(o[0]) == replicas))
        return want
