"""Which proxy mode is really active, three ways, and what the data plane holds.

  configmap_mode   `mode` in the kube-proxy ConfigMap (what the article edits)
  endpoint_mode    GET 127.0.0.1:10249/proxyMode on a node (kube-proxy's own answer)
  log_modes        the `Using <mode> Proxier` line of each kube-proxy pod's log
  deprecation_notices  kube-proxy's "ipvs is deprecated" log lines and Warning Events
  dump_dataplane   iptables-save -c / nft list ruleset / ipvsadm / conntrack -S of a node
  dataplane_size   how big that data plane is (rules, map elements, virtual services)
"""
from __future__ import annotations

import logging
import re

import yaml

from .kube import Kube
from .peers import Peer
from .waits import Wait, scaled

log = logging.getLogger(__name__)

KUBE_PROXY_SELECTOR = "k8s-app=kube-proxy"
DATAPLANE_COMMANDS = {
    "iptables-save": ["iptables-save", "-c"],  # with packet counters: which rule dropped or rejected
    "nft-ruleset": ["nft", "list", "ruleset"],
    "ipvsadm": ["ipvsadm", "-Ln"],
    "ipvsadm-stats": ["ipvsadm", "-Ln", "--stats"],  # connections and packets per real server
    "ipvs-connections": ["ipvsadm", "-Lnc"],   # each connection's state and real server
    "conntrack-stats": ["conntrack", "-S"],    # per-CPU insert_failed / drop / invalid counters
}
_USING = re.compile(r"Using (\w+) [Pp]roxier")


def configmap_mode(kube: Kube) -> str:
    return configmap_config(kube).get("mode") or "iptables"  # empty: the platform default, iptables on Linux


def configmap_config(kube: Kube) -> dict:
    """The kube-proxy ConfigMap's config.conf, parsed (what kube-proxy pods read when they start)."""
    cm = kube.core.read_namespaced_config_map("kube-proxy", "kube-system")
    return yaml.safe_load(cm.data.get("config.conf", "")) or {}


def endpoint_mode(node: Peer) -> str:
    """kube-proxy's metrics server answers /proxyMode on the node's loopback."""
    return node.exec(["curl", "-s", "--max-time", "5", "http://127.0.0.1:10249/proxyMode"]).stdout.strip()


def parse_using_line(log_text: str) -> str | None:
    m = _USING.search(log_text)
    return m.group(1).lower() if m else None


def log_modes(kube: Kube) -> dict[str, str | None]:
    """Pod name -> mode named in its `Using <mode> Proxier` log line."""
    out = {}
    for p in kube.pods(KUBE_PROXY_SELECTOR, "kube-system"):
        text = kube.logs(p.name, "kube-system", tail=100000)
        out[p.name] = parse_using_line(text)
    return out


IPVS_DEPRECATION_REASON = "IPVSDeprecation"
_DEPRECATED = re.compile(r"ipvs proxier (is now|has been) deprecated", re.IGNORECASE)


# kube-proxy logs this first thing in ProxyServer.Run, after the proxier (and its deprecation
# notice) is made (cmd/kube-proxy/app/server.go, 1.34 to 1.37): a log without it is a pod still starting.
_STARTED = re.compile(r'"Version info"')


def deprecation_notices(kube: Kube) -> dict:
    """kube-proxy's announcements that ipvs is deprecated: each pod's log line (or None) and the
    Warning Events with reason IPVSDeprecation ("<node>: <message>"). Read once every kube-proxy
    pod is past the point where it would have said it: a pod restarted by the test before (E17)
    was read a second after its start, before its notice, in CI."""
    texts: dict[str, str] = {}

    def started() -> dict[str, bool]:  # pod -> past its start (the texts are kept aside: long)
        texts.clear()
        texts.update({p.name: kube.logs(p.name, "kube-system", tail=100000)
                      for p in kube.pods(KUBE_PROXY_SELECTOR, "kube-system")})
        return {name: bool(_STARTED.search(text)) for name, text in texts.items()}
    Wait("every kube-proxy pod past its proxier's start (its \"Version info\" log line)",
         timeout=120).until(started, lambda seen: bool(seen) and all(seen.values()))
    logs = {name: next((line.strip() for line in text.splitlines() if _DEPRECATED.search(line)), None)
            for name, text in texts.items()}
    events = kube.core.list_event_for_all_namespaces(field_selector=f"reason={IPVS_DEPRECATION_REASON}").items
    return {"logs": logs, "events": sorted(f"{e.involved_object.name}: {e.message}" for e in events)}


def dump_dataplane(node: Peer) -> dict[str, str]:
    """Each data-plane listing of a node (a missing tool gives its error text)."""
    out = {}
    for name, argv in DATAPLANE_COMMANDS.items():
        res = node.exec(argv, check=False, timeout=60)
        out[name] = res.stdout if res.ok else f"(exit {res.returncode}) {res.stderr.strip()}"
    return out


def count_iptables_rules(save_text: str) -> int:
    """Rules in an iptables-save listing (every table): its `-A` lines."""
    return sum(1 for line in save_text.splitlines() if line.startswith("-A "))


def kube_services_positions(nat_text: str) -> dict[str, int]:
    """ClusterIP -> 1-based position of its rule in the KUBE-SERVICES chain (iptables-save -t nat).

    The first packet of a connection walks this chain rule by rule until its Service matches,
    which is why first-packet latency in iptables mode depends on the position."""
    out: dict[str, int] = {}
    n = 0
    for line in nat_text.splitlines():
        if line.startswith("-A KUBE-SERVICES "):
            n += 1
            parts = line.split()
            if "-d" in parts:
                out.setdefault(parts[parts.index("-d") + 1].split("/")[0], n)
    return out


def count_nft(json_text: str) -> tuple[int, int]:
    """(rules, set and map elements) in `nft -j list table ...` output."""
    import json
    rules = elements = 0
    for obj in json.loads(json_text or "{}").get("nftables", []):
        if "rule" in obj:
            rules += 1
        for kind in ("map", "set"):
            if kind in obj:
                elements += len(obj[kind].get("elem", []))
    return rules, elements


def count_ipvs_services(ipvsadm_text: str) -> int:
    """Virtual services in `ipvsadm -Ln` output (one line each, real servers are indented)."""
    return sum(1 for line in ipvsadm_text.splitlines() if line.split()[:1] in (["TCP"], ["UDP"], ["SCTP"]))


def dataplane_size(node: Peer, mode: str, timeout: float = 120) -> dict[str, int]:
    """How big a node's data plane is in `mode`: what kube-proxy wrote, counted its own way."""
    if mode == "nftables":
        res = node.exec(["nft", "-j", "list", "table", "ip", "kube-proxy"], timeout=timeout)
        rules, elements = count_nft(res.stdout)
        return {"nft_rules": rules, "nft_elements": elements,
                "iptables_rules": count_iptables_rules(node.exec(["iptables-save"], timeout=timeout).stdout)}
    out = {"iptables_rules": count_iptables_rules(node.exec(["iptables-save"], timeout=timeout).stdout)}
    if mode == "ipvs":
        out["ipvs_virtual_services"] = count_ipvs_services(node.exec(["ipvsadm", "-Ln"], timeout=timeout).stdout)
    return out


def service_programmed(node: Peer, mode: str, namespace: str, service: str, cluster_ip: str,
                       port: int) -> str | None:
    """The data-plane line(s) showing the Service on this node, or None if absent."""
    svc = f"{namespace}/{service}"
    if mode == "iptables":
        text = node.exec(["iptables-save", "-t", "nat"]).stdout
        lines = [l for l in text.splitlines() if l.startswith("-A KUBE-SVC-") and svc in l]
    elif mode == "nftables":
        text = node.exec(["nft", "list", "table", "ip", "kube-proxy"]).stdout
        # service chains are named service-<hash>-<ns>/<name>/<proto>/<port name>
        lines = [l.strip() for l in text.splitlines() if svc in l]
    elif mode == "ipvs":
        text = node.exec(["ipvsadm", "-Ln", "-t", f"{cluster_ip}:{port}"], check=False).stdout
        lines = [l for l in text.splitlines() if l.strip()]
    else:
        raise ValueError(f"unknown mode {mode}")
    return "\n".join(lines[:6]) if lines else None


# What a node's data plane shows once kube-proxy has programmed something.
# (nftables: the affinity set is referenced as @affinity-...; a bare "affinity" would match names)
AFFINITY_MARKERS = {"iptables": "--rcheck", "nftables": "@affinity", "ipvs": "persistent"}


def dataplane_has(node: Peer, mode: str, needles: tuple[str, ...]) -> bool:
    """Does one line of the data plane kube-proxy writes in this mode contain every needle?
    In ipvs mode the virtual-server table is read first and iptables-save only when that lacks the
    line (each exec into a node in the UML guest takes a second or more)."""
    if mode == "nftables":
        return has_line(node.exec(["nft", "list", "table", "ip", "kube-proxy"], check=False).stdout, needles)
    if mode == "ipvs" and has_line(node.exec(["ipvsadm", "-Ln"], check=False).stdout, needles):
        return True
    return has_line(node.exec(["iptables-save"]).stdout, needles)


def has_line(text: str, needles: tuple[str, ...]) -> bool:
    """Does one line of `text` contain every needle?"""
    return any(all(n in line for n in needles) for line in text.splitlines())


def wait_programmed(nodes: list[Peer], mode: str, *needles: str, present: bool = True,
                    timeout: float = 60) -> None:
    """Wait until a line holding every needle (a ClusterIP; a namespace and a marker) is
    (or is no longer) in every node's data plane."""
    from .waits import Wait

    def not_done() -> list[str]:
        return [n.name for n in nodes if dataplane_has(n, mode, needles) != present]

    Wait(f"a line with {' & '.join(needles)} to be {'in' if present else 'gone from'} the {mode} data plane "
         f"of every node (seen: nodes not yet done)", timeout=timeout).until(not_done, lambda m: not m)


def ipvs_scheduler(kube: Kube) -> str:
    """The scheduler the kube-proxy ConfigMap asks for; rr when it leaves it empty (kube-proxy's default)."""
    return (configmap_config(kube).get("ipvs") or {}).get("scheduler") or "rr"


def set_config(kube: Kube, changes: dict) -> dict:
    """Merge `changes` into the kube-proxy ConfigMap's config.conf (as the article's `kubectl edit`
    does); returns the previous config. Takes effect when kube-proxy pods restart."""
    import copy
    import json
    before = configmap_config(kube)
    after = copy.deepcopy(before)
    for key, value in changes.items():
        if isinstance(value, dict):
            after.setdefault(key, {}).update(value)
        else:
            after[key] = value
    patch = {"data": {"config.conf": yaml.safe_dump(after, sort_keys=False)}}
    kube.kubectl("-n", "kube-system", "patch", "configmap", "kube-proxy", "--type", "merge",
                 "-p", json.dumps(patch), what="editing the kube-proxy ConfigMap", idempotent=True)
    return before


def put_config(kube: Kube, conf: dict) -> None:
    """Write `conf` as the kube-proxy ConfigMap's whole config.conf (restores what set_config
    returned, including keys that were absent before)."""
    import json
    patch = {"data": {"config.conf": yaml.safe_dump(conf, sort_keys=False)}}
    kube.kubectl("-n", "kube-system", "patch", "configmap", "kube-proxy", "--type", "merge",
                 "-p", json.dumps(patch), what="restoring the kube-proxy ConfigMap", idempotent=True)


def rolling_restart(kube: Kube):
    """Restart kube-proxy pods one at a time, each time waiting for the DaemonSet to be whole
    again; yields (node, command) per step (so callers can check traffic in between)."""
    for pod in kube.pods(KUBE_PROXY_SELECTOR, "kube-system"):
        _restart(kube, pod.name)
        yield pod.node, f"kubectl -n kube-system delete pod {pod.name}  # on {pod.node}; DaemonSet recreates it"


def restart_all(kube: Kube) -> None:
    """Restart every kube-proxy pod at once and wait for the DaemonSet to be whole again: for a
    config change that need not be watched node by node (one wait, not one per node)."""
    _restart(kube, "-l", KUBE_PROXY_SELECTOR)


def restart_on(kube: Kube, node: str) -> str:
    """Restart the kube-proxy pod on `node`, wait for the DaemonSet to be whole again; the new
    pod's name."""
    old = [p.name for p in kube.pods(KUBE_PROXY_SELECTOR, "kube-system") if p.node == node]
    if len(old) != 1:
        raise RuntimeError(f"expected one kube-proxy pod on {node}, found {old}")
    _restart(kube, old[0])
    new = [p.name for p in kube.pods(KUBE_PROXY_SELECTOR, "kube-system") if p.node == node and p.name != old[0]]
    if len(new) != 1:
        raise RuntimeError(f"expected one new kube-proxy pod on {node} after deleting {old[0]}, found {new}")
    return new[0]


def _restart(kube: Kube, *pods: str) -> None:
    """Delete kube-proxy pods (by name or selector) and wait until the DaemonSet is whole again."""
    t = scaled(120)
    kube.kubectl("-n", "kube-system", "delete", "pod", *pods, "--wait=true", timeout=t)
    kube.kubectl("-n", "kube-system", "rollout", "status", "daemonset/kube-proxy", f"--timeout={t}s",
                 timeout=t + 30, what="kube-proxy DaemonSet after a restart")


def healthz(node: Peer) -> str:
    """kube-proxy's /healthz on the node: 200 once its rules are in sync."""
    return node.exec(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3",
                      "http://127.0.0.1:10256/healthz"], check=False).stdout.strip()


def other_mode(mode: str) -> str:
    """The mode E16 switches to: iptables <-> nftables, and ipvs -> nftables, the move upstream asks
    ipvs users to make now that ipvs is deprecated (v1.35)."""
    return "iptables" if mode == "nftables" else "nftables"


def unrestarted_steps(kube: Kube):
    """The article's second step (restarting kube-proxy) deliberately skipped: one step per node
    that touches nothing (--break=mode-restart-skipped)."""
    for pod in kube.pods(KUBE_PROXY_SELECTOR, "kube-system"):
        yield f"(no restart of {pod.name} on {pod.node}: deliberately skipped)"
