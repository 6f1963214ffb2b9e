"""What is saved when a test fails, and where.

    <artifacts>/<mode>/<test id>/
        objects.yaml        every object in the test's namespace
        events.txt          the namespace's events
        endpointslices.yaml
        kube-proxy.log      logs of every kube-proxy pod (last lines)
        <node>/iptables-save, nft-ruleset, ipvsadm, ipvsadm-stats, ipvs-connections, conntrack-stats
    <artifacts>/kind-logs/<cluster>/   `kind export logs` when the session failed
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from . import config, modes
from .runner import DEFAULT, Runner

log = logging.getLogger(__name__)


def safe_name(test_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", test_id)[:150]


def collect_failure(dest: Path, kube, namespace: str, nodes: list) -> Path:
    """Dump what explains a failed test; never raises (a failing dump must not hide the test's error)."""
    dest.mkdir(parents=True, exist_ok=True)

    def save(name: str, fn) -> None:
        try:
            (dest / name).write_text(fn())
        except Exception as e:  # noqa: BLE001 - best effort by design
            (dest / name).write_text(f"could not collect: {e}\n")

    k = kube.kubectl
    save("objects.yaml", lambda: k("-n", namespace, "get", "all,endpoints,endpointslices,services",
                                   "-o", "yaml", check=False).stdout)
    save("events.txt", lambda: k("-n", namespace, "get", "events", "--sort-by=.lastTimestamp",
                                 check=False).stdout)
    save("endpointslices.yaml", lambda: k("-n", namespace, "get", "endpointslices", "-o", "yaml",
                                          check=False).stdout)
    save("kube-proxy.log", lambda: k("-n", "kube-system", "logs", "-l", modes.KUBE_PROXY_SELECTOR,
                                     "--prefix", "--tail=300", check=False).stdout)
    for node in nodes:
        for name, text in _dump(node).items():
            (dest / node.name).mkdir(exist_ok=True)
            (dest / node.name / name).write_text(text)
    log.warning("artifacts of the failed test: %s", dest)
    return dest


def _dump(node) -> dict[str, str]:
    try:
        return modes.dump_dataplane(node)
    except Exception as e:  # noqa: BLE001
        return {"error": str(e)}


def export_kind_logs(dest: Path, cluster_name: str, runner: Runner = DEFAULT) -> None:
    runner.run([config.tool("kind"), "export", "logs", str(dest / cluster_name), "--name", cluster_name],
               check=False, timeout=300)
    log.warning("kind logs of %s: %s", cluster_name, dest / cluster_name)
