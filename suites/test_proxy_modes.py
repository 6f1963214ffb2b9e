"""kube-proxy's modes: which one runs, what it builds, and what changes with it.

Experiments 14-16 of the Services article ("kube-proxy代理模型", "修改代理模型"), and E19:
the mode in the ConfigMap is the one kube-proxy reports and logs; each mode
leaves its own data structures on the node; ipvs answers ping on a ClusterIP
while iptables does not; the mode can be changed by editing the ConfigMap and
restarting kube-proxy. (E17, the ipvs schedulers, is in test_ipvs_schedulers.py.)
"""
import time

import pytest

from harness import expectations, modes

SVC = "demoapp-svc"


@pytest.mark.experiment("E14", "The active mode is the one asked for, everywhere, and holds the Service")
def test_active_mode_agrees_everywhere(lab):
    """The kube-proxy ConfigMap's mode, each node's /proxyMode answer and each kube-proxy log's
    `Using <mode> Proxier` line agree with the requested mode, and every node's data plane holds the
    Service (KUBE-SVC chains, the kube-proxy nftables table, or IPVS virtual servers).
    """
    if not lab.cluster.dataplane_access:
        pytest.skip("reads each node's data plane (iptables-save, nft, ipvsadm), which needs the nodes as "
                    f"local kind containers (node access here: {lab.cluster.node_access})")
    configured = modes.configmap_mode(lab.kube)
    lab.note(f"kubectl -n kube-system get configmaps kube-proxy -o yaml | grep mode: mode: {configured}")
    assert configured == lab.mode, f"kube-proxy ConfigMap says mode {configured!r}; the run asked for {lab.mode!r}"
    for node in lab.cluster.node_peers():
        seen = modes.endpoint_mode(node)
        lab.note(f"{node.name}: curl 127.0.0.1:10249/proxyMode -> {seen}")
        assert seen == lab.mode, f"{node.name} reports {seen!r}, expected {lab.mode!r}"
    logged = modes.log_modes(lab.kube)
    lab.note(*(f"kubectl -n kube-system logs {pod} | grep Using -> Using {m} Proxier" for pod, m in logged.items()))
    assert set(logged.values()) == {lab.mode}, f"kube-proxy logs name {logged}, expected {lab.mode}"

    lab.deploy_demoapp(replicas=1)
    svc = lab.service("clusterip", SVC)
    lab.wait_endpoints(SVC, replicas=1)
    for node in lab.cluster.node_peers():
        lines = modes.service_programmed(node, lab.mode, lab.ns, SVC, svc.cluster_ip, svc.port)
        assert lines, f"{node.name}: no {lab.mode} data-plane entry for {lab.ns}/{SVC}"
        lab.note(f"{node.name} ({lab.mode}):", *(f"  {l}" for l in lines.splitlines()[:3]))


@pytest.mark.experiment("E15", "ping a ClusterIP: no answer in iptables/nftables, port unreachable in ipvs")
def test_ping_cluster_ip(lab):
    """A ClusterIP is only a rule target in iptables and nftables mode, so ping gets no echo reply (no
    answer; in nftables possibly port unreachable from kube-proxy's cluster-ips-check reject);
    in ipvs mode the address is bound to the kube-ipvs0 interface, so the node itself answers, and
    kube-proxy's KUBE-IPVS-FILTER chain rejects the echo request with ICMP port unreachable (the
    article's echo reply predates that filter).
    """
    lab.deploy_demoapp(replicas=1)
    svc = lab.service("clusterip", SVC)
    lab.wait_endpoints(SVC, replicas=1)
    client = lab.client(lab.cluster.workers[0])
    lab.assert_local(svc.cluster_ip)
    lab.step(f"ping -c 2 -W 1 {svc.cluster_ip} (from {client.describe()})")
    res = client.exec(["ping", "-c", "2", "-W", "1", svc.cluster_ip], check=False, timeout=30)
    lines = res.stdout.strip().splitlines()
    lab.note(*lines[1:2], *lines[-2:])
    seen = expectations.ping_outcome(res.stdout)
    expected = " or ".join(sorted(expectations.PING_OUTCOMES[lab.mode]))
    lab.note(f"outcome: {seen} (expected in {lab.mode} mode: {expected})")
    assert seen in expectations.PING_OUTCOMES[lab.mode], (
        f"ping {svc.cluster_ip} in {lab.mode} mode: expected {expected}, got {seen}\n{res.stdout}")


@pytest.mark.kind_only
@pytest.mark.cluster_wide  # switches kube-proxy on every node to another mode, then back
@pytest.mark.experiment("E16", "Changing the mode via the ConfigMap and a rolling kube-proxy restart")
def test_change_proxy_mode(lab):
    """Editing the kube-proxy ConfigMap's mode and restarting the kube-proxy pods one by one makes the
    new mode take effect on every node, and an existing Service answers again after every restart
    within the convergence bound (iptables <-> nftables, ipvs -> nftables: the move upstream asks ipvs
    users to make). The run's own cluster is switched, and switched back afterwards.
    """
    target = modes.other_mode(lab.mode)
    lab.cluster.needs_change(f"kube-proxy ConfigMap mode={target} and a rolling restart of kube-proxy, "
                             "both restored afterwards")
    pods = lab.deploy_demoapp(replicas=2)
    svc = lab.service("clusterip", SVC)
    lab.wait_endpoints(SVC, replicas=len(pods))
    node = lab.node(lab.cluster.control_plane)
    names = {p.name for p in pods}
    lab.converge(node, svc.cluster_ip, svc.port, names)

    lab.step(f"kubectl -n kube-system edit configmaps kube-proxy  # mode: {lab.mode} -> {target}")
    with lab.cluster.proxy_mode_changed(target) as restarts:
        for step in restarts:
            lab.step(step)
            # Right after a restart a request can still be lost while the old mode's rules are cleaned
            # up (seen once: 1 timeout in 10 on nftables -> iptables); the claim is that the Service
            # answers again within the convergence bound, then without a single failure.
            started = time.monotonic()
            lab.converge(node, svc.cluster_ip, svc.port, names)
            lab.note(f"after `{step.split('  #')[0]}`: answering again in {time.monotonic() - started:.1f}s")
            sample = lab.probe(node, svc.cluster_ip, svc.port, n=20)
            lab.check("mode-change-keeps-service", node, sample)
        for peer in lab.cluster.node_peers():
            seen = modes.endpoint_mode(peer)
            lab.note(f"{peer.name}: /proxyMode -> {seen}")
            assert seen == target, f"kube-proxy on {peer.name} runs {seen!r} after the switch to {target!r}"
        assert set(modes.log_modes(lab.kube).values()) == {target}
        lab.note(f"kube-proxy logs: Using {target} Proxier")
        sample = lab.probe(node, svc.cluster_ip, svc.port, n=30)
        lab.check("mode-change-keeps-service", node, sample)
    lab.note(f"switched back: every node runs {lab.mode} again")


@pytest.mark.experiment("E19", "kube-proxy announces that ipvs is deprecated, in ipvs mode from v1.35 on")
def test_ipvs_deprecation_is_announced(lab):
    """Not a claim of the article (written before it): upstream deprecated the ipvs proxier in v1.35
    and plans to turn it off by default in 1.40. kube-proxy in ipvs mode on >= 1.35 says so at
    start in an error-level log line, on every node; on older releases, and in iptables or nftables
    mode, it does not. Its Warning Event (reason IPVSDeprecation) is recorded before kube-proxy's
    event sink starts, and reaches the API server on some starts only
    (harness.expectations.IPVS_DEPRECATION_EVENT_DELIVERED): noted where it may come, and must not
    come anywhere else.
    """
    version = lab.kube.server_version()
    want = expectations.release_claim_holds("ipvs-deprecation", lab.mode, version)
    why = expectations.RELEASE_CLAIMS["ipvs-deprecation"].why
    notices = modes.deprecation_notices(lab.kube)
    lab.note(f"Kubernetes {version}, {lab.mode} mode: the notice is expected: {'yes' if want else 'no'} ({why})")
    lab.note(*(f"kubectl -n kube-system logs {pod} | grep -i 'ipvs proxier.*deprecated' -> {line or '(nothing)'}"
               for pod, line in notices["logs"].items()))
    lab.note("kubectl get events -A --field-selector reason=IPVSDeprecation -> "
             + ("; ".join(notices["events"]) or "(none)"))
    if want:
        silent = sorted(pod for pod, line in notices["logs"].items() if not line)
        assert not silent, f"kube-proxy {silent} did not log the ipvs deprecation on {version} ({why})"
    else:
        said = {pod: line for pod, line in notices["logs"].items() if line}
        assert not said, f"an ipvs deprecation log line on {version} in {lab.mode} mode, where none is expected: {said}"
    event_expected = want and expectations.IPVS_DEPRECATION_EVENT_DELIVERED
    if event_expected is None:
        return  # delivery not guaranteed: the Events are in the evidence above, not judged
    assert bool(notices["events"]) == event_expected, (
        f"IPVSDeprecation Events on {version} in {lab.mode} mode: expected {'some' if event_expected else 'none'}, "
        f"seen {notices['events'] or 'none'} (harness.expectations.IPVS_DEPRECATION_EVENT_DELIVERED)")
