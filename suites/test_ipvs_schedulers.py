"""The ipvs schedulers, each with its own pattern.

Experiment 17 of the Services article (its "ipvs代理模型" section lists rr, lc, dh, sh, sed
and nq): kube-proxy's ipvs.scheduler picks how IPVS shares connections among a Service's pods.
The six tests share one namespace, demo app and client pod (shared_namespace: in the UML guest
that setup costs about a minute a test), and switch the scheduler one after another; the
ConfigMap as it was comes back once, after the last. Each test makes a Service of its own: a new
virtual server starts with no connection counts, and lc, which counts connections that have
ended too, would otherwise see the tests before it.
"""
import pytest

SVC = "demoapp-svc"
SCHEDULERS = ["rr", "lc", "sh", "sed", "nq", "dh"]

pytestmark = [
    pytest.mark.cluster_wide,  # switches and restarts kube-proxy on every node
    pytest.mark.modes("ipvs"),
    pytest.mark.shared_namespace,
]


@pytest.fixture(scope="module")
def backends(module_lab):
    """The demo app's three pods and a client pod on a worker, for every scheduler; the kube-proxy
    ConfigMap from before the first switch is back after the module's last test."""
    lab = module_lab
    lab.cluster.needs_change("kube-proxy ConfigMap ipvs.scheduler (rr, lc, sh, sed, nq, dh in turn) and a "
                             "restart of kube-proxy per switch, both restored afterwards")
    if not lab.cluster.dataplane_access:
        pytest.skip("waits for the scheduler in each node's IPVS table, which needs the nodes as local kind "
                    f"containers (node access here: {lab.cluster.node_access})")
    names = {p.name for p in lab.deploy_demoapp(replicas=3)}
    client = lab.client(lab.cluster.workers[0])
    try:
        yield names, client
    finally:
        lab.cluster.restore_ipvs_scheduler()


@pytest.mark.experiment("E17", "ipvs schedulers show their characteristic patterns")
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_ipvs_scheduler_patterns(lab, backends, scheduler):
    """With kube-proxy's ipvs.scheduler set to rr, lc, sh, sed, nq or dh, sequential short requests
    from one client show the scheduler's pattern: rr rotates; sh and dh (hashing on source or
    destination) stick to one backend; lc spreads over the backends; sed and nq, which count only
    active connections, see every server idle and keep the first one (the article lists the six
    schedulers without patterns; see harness.expectations for the kernel's reasons).
    """
    names, client = backends
    if lab.cluster.set_ipvs_scheduler(scheduler):
        lab.step(f"kubectl -n kube-system edit configmaps kube-proxy  # ipvs.scheduler: {scheduler}; "
                 "kubectl -n kube-system delete pods -l k8s-app=kube-proxy")
    else:
        lab.note(f"kube-proxy runs ipvs.scheduler {scheduler} already (an empty setting means rr): "
                 "no ConfigMap edit, no restart")
    svc = lab.service("clusterip", f"{SVC}-{scheduler}")
    lab.wait_programmed(svc.cluster_ip, scheduler)
    sample = lab.probe(client, svc.cluster_ip, svc.port, n=60)
    lab.check(f"ipvs-scheduler-{scheduler}", client, sample, backends=names)
