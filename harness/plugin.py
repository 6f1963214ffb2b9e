"""pytest plugin: options, hooks and fixtures only (the work lives in the other modules).

    pytest suites/ --proxy-mode=iptables,nftables -n 2

One kind cluster per proxy mode per run. Under pytest-xdist the first worker
that needs a mode creates its cluster behind a file lock in the run's shared
directory; the others attach. The controller deletes, once, every cluster this
run created (unless --keep-clusters), also after Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import re
import signal
import time
import uuid
from pathlib import Path

import pytest

from . import config as hcfg
from . import runstate

log = logging.getLogger("harness")

REMOVED_MODES = {"userspace": "the userspace proxy mode was removed in Kubernetes v1.26; "
                              "use iptables, ipvs or nftables"}


# ---------------------------------------------------------------- options
def parse_modes(values: list[str] | None) -> list[str]:
    """'--proxy-mode a,b --proxy-mode c' -> [a, b, c], validated, order kept, no repeats."""
    modes: list[str] = []
    for value in values or ["iptables"]:
        for m in value.split(","):
            m = m.strip().lower()
            if not m:
                continue
            if m in REMOVED_MODES:
                raise pytest.UsageError(f"--proxy-mode={m}: {REMOVED_MODES[m]}")
            if m not in hcfg.PROXY_MODES:
                raise pytest.UsageError(f"--proxy-mode={m}: unknown mode; expected one of "
                                        f"{', '.join(hcfg.PROXY_MODES)} (comma-separated for several)")
            if m not in modes:
                modes.append(m)
    return modes


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise pytest.UsageError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise pytest.UsageError(f"expected at least 1, got {n}")
    return n


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise pytest.UsageError(f"--kube-proxy-config: not JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise pytest.UsageError(f"--kube-proxy-config: expected a JSON object, got {text!r}")
    for key, why in (("mode", "the mode comes from --proxy-mode (a run per mode); this would contradict it"),
                     ("kind", "the harness writes the KubeProxyConfiguration's kind and apiVersion itself"),
                     ("apiVersion", "the harness writes the KubeProxyConfiguration's kind and apiVersion itself")):
        if key in value:
            raise pytest.UsageError(f"--kube-proxy-config: {key!r} is not allowed: {why}")
    if "masqueradeAll" in value:
        # kube-proxy's v1alpha1 config has no top-level masqueradeAll and silently drops it.
        raise pytest.UsageError('--kube-proxy-config: masqueradeAll belongs under "iptables" or "nftables" '
                                '(kube-proxy ignores it at the top level), e.g. '
                                "'{\"iptables\": {\"masqueradeAll\": true}, \"nftables\": {\"masqueradeAll\": true}}'")
    return value


CLUSTER_PREFIX_MAX = hcfg.CLUSTER_PREFIX_MAX


def _cluster_prefix(text: str) -> str:
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,%d}[a-z0-9])?" % (CLUSTER_PREFIX_MAX - 2), text):
        raise pytest.UsageError(f"--cluster-prefix={text!r}: use lower-case letters, digits and '-', at most "
                                f"{CLUSTER_PREFIX_MAX} characters (the mode and kind's node suffixes are appended, "
                                "and a node's hostname must fit in 64)")
    return text


def pytest_addoption(parser: pytest.Parser) -> None:
    from . import gate  # small, no heavy imports
    g = parser.getgroup("svc-harness", "Kubernetes Services on kind clusters")
    g.addoption("--proxy-mode", action="append", dest="proxy_modes", metavar="MODE[,MODE]",
                help="kube-proxy mode(s): iptables, ipvs, nftables; several run the suites once per mode "
                     "(default: iptables)")
    g.addoption("--ipvs-engine", choices=["auto", "host", "guest"], default="auto",
                help="where ipvs clusters run: the host's Docker engine, or one inside a user-mode-Linux guest "
                     "whose kernel has IPVS (harness.guest); auto = the guest when the host kernel lacks IPVS")
    g.addoption("--all-modes-in-guest", action="store_true", default=False,
                help="run every mode's clusters in the UML guest engine, not only ipvs: the three modes on one "
                     "kernel and one engine (slower: see docs/ipvs-guest.md)")
    g.addoption("--guest-worker-nodes", type=int, default=1,
                help="worker nodes of a cluster in the guest engine (default: 1, i.e. 2 nodes; see README)")
    g.addoption("--guests", default="auto",
                help="UML guests a run spreads its guest clusters over, one cluster per guest and mode; each "
                     "xdist worker uses one (default: auto = one per worker, at most one per host CPU: a guest "
                     "runs one CPU)")
    g.addoption("--guest-slot", type=int, default=None,
                help="the guest this run's guest clusters use, 0 .. --guests - 1 (default: the xdist worker's "
                     "number modulo --guests); `python -m harness.breaks prove --jobs N` gives each lane its own")
    g.addoption("--worker-nodes", type=_positive_int, default=hcfg.DEFAULT_WORKERS,
                help="worker nodes per cluster (default: 2, i.e. 3 nodes like the article)")
    g.addoption("--kubernetes-version", default=None, metavar="MINOR[,MINOR]",
                help="Kubernetes release of the clusters: a minor such as 1.37 (its pinned patch is used; "
                     "the ones the harness has: images/kubernetes/); several run the suites once per release, "
                     "each in <artifacts-dir>/k8s-<minor>/, and report.md shows release x mode. Default: "
                     "KUBERNETES_DEFAULT in images/versions.env, or $SVC_HARNESS_K8S_VERSION")
    g.addoption("--node-image", default=None,
                help="kind node image (default: the offline build svc-harness/node:<k8s version> if present, "
                     "else upstream kindest/node)")
    g.addoption("--cluster-prefix", type=_cluster_prefix, default=hcfg.DEFAULT_CLUSTER_PREFIX,
                help="cluster name prefix; the mode is appended (default: svc-harness)")
    g.addoption("--keep-clusters", action="store_true", help="keep the clusters after the run")
    g.addoption("--reuse-clusters", action="store_true",
                help="reuse a healthy cluster this harness created earlier instead of recreating it")
    g.addoption("--byo-kubeconfig", default=None,
                help="run against an existing cluster (left as found: nothing outside the test namespaces "
                     "is created or changed, and the run fails if kube-system or the nodes changed)")
    g.addoption("--byo-context", default=None,
                help="with --byo-kubeconfig: the context to use (default: the kubeconfig's current context)")
    g.addoption("--allow-cluster-changes", action="store_true",
                help="with --byo-kubeconfig: allow experiments that change the cluster beyond test namespaces "
                     "(node cut-off, ipvs scheduler; LoadBalancer Services when no MetalLB in layer-2 mode is found, "
                     "which a cloud provider would act on); each change is undone and listed in the summary")
    g.addoption("--node-access", choices=["auto", "docker", "pod"], default="auto",
                help="with --byo-kubeconfig: how to reach nodes: docker exec into local kind containers, or a "
                     "hostNetwork pod per node (default: auto, docker when the nodes are local kind containers)")
    g.addoption("--lb-provider", choices=["metallb", "none"], default="metallb",
                help="LoadBalancer provider installed in each cluster (default: metallb)")
    g.addoption("--external-client", choices=["container", "host"], default="container",
                help="the external vantage point: a container on the kind network (default) or this host")
    g.addoption("--samples", type=_positive_int, default=300,
                help="requests per distribution sample (default: 300)")
    g.addoption("--artifacts-dir", default="artifacts",
                help="where failure artifacts and the report go (default: ./artifacts)")
    g.addoption("--kube-proxy-config", type=_json_object, default=None, metavar="JSON",
                help='extra KubeProxyConfiguration fields for the clusters, e.g. \'{"iptables": {"masqueradeAll": true}}\' '
                     "(useful to watch a suite fail when kube-proxy is configured against the article)")
    g.addoption("--break", action="append", dest="breaks", metavar="NAME[,NAME]",
                help="damage the clusters on purpose to watch experiments fail; names and the experiments "
                     "each must break: python -m harness.breaks list")
    g.addoption("--experiments", default=None, metavar="E01,E02",
                help="run only these experiments (by id); an unknown id is a usage error")
    g.addoption("--skip-unavailable-modes", action="store_true",
                help="a requested mode that cannot run on this machine is reported NOT RUN instead of "
                     f"stopping the run (exit {gate.EXIT_NOT_RUN})")
    g.addoption("--demo-image", default=None,
                help="demo app image (default: the offline build; ikubernetes/demoapp:v1.0 works too)")
    from .upstream.specs import DEFAULT_FOCUS, DEFAULT_SKIP, PRESETS
    g.addoption("--upstream-conformance", action="store_true",
                help="also run upstream Kubernetes' own Services e2e specs (e2e.test) on each mode's cluster, "
                     "one pytest result per spec and mode (suites/test_upstream.py)")
    g.addoption("--upstream-focus", default=DEFAULT_FOCUS, metavar="REGEX",
                help=f"ginkgo focus for --upstream-conformance, or a preset: {', '.join(PRESETS)} "
                     f"(default: {DEFAULT_FOCUS})")
    g.addoption("--upstream-skip", default=DEFAULT_SKIP, metavar="REGEX",
                help=f"ginkgo skip for --upstream-conformance (default: {DEFAULT_SKIP})")
    g.addoption("--upstream-procs", type=_positive_int, default=2,
                help="parallel ginkgo processes per upstream run (default: 2)")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config):
    """--kubernetes-version with several releases: a pytest run per release and one release x mode
    report (harness.releases), instead of this run."""
    from . import releases
    opts = config.option
    if _is_worker(config) or opts.help or not releases.several(opts.kubernetes_version):
        return None
    if opts.byo_kubeconfig:
        raise pytest.UsageError("--kubernetes-version picks the release of the clusters the harness makes; with "
                                "--byo-kubeconfig the cluster's own release is used")
    if opts.node_image:
        raise pytest.UsageError("--node-image is one release's node image; with several --kubernetes-version "
                                "releases each run uses its own (svc-harness/node:<release>)")
    args = list(config.invocation_params.args)
    try:
        minors = releases.requested(opts.kubernetes_version)
        for minor in minors:  # a prefix with no room for the release's suffix is refused here
            releases.cluster_prefix(opts.cluster_prefix, minor)
    except ValueError as e:
        raise pytest.UsageError(f"--kubernetes-version: {e}") from None
    cwd = config.invocation_params.dir
    return releases.run_each(minors, args, (cwd / opts.artifacts_dir).resolve(), cwd)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "experiment(id, title): an experiment of the Services article")
    config.addinivalue_line("markers", "kind_only: needs a kind cluster the harness makes (skipped with --byo-kubeconfig)")
    config.addinivalue_line("markers", "modes(*modes): run only in these proxy modes")
    config.addinivalue_line("markers", "cluster_wide: changes the whole cluster for a while (a node cut off, "
                            "kube-proxy reconfigured); runs with no other test on its cluster")
    config.addinivalue_line("markers", "shared_namespace: a module whose tests share one namespace and the setup "
                            "made in it (module_lab); its claim on the cluster lasts from its first test to its last")
    config.addinivalue_line("markers", "upstream: an upstream Kubernetes e2e spec (--upstream-conformance)")
    opts = config.option
    asked_modes = parse_modes(opts.proxy_modes) if opts.proxy_modes else None
    opts.proxy_modes = parse_modes(opts.proxy_modes)
    from . import breaks
    try:
        opts.breaks = breaks.parse(opts.breaks)
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    for b in opts.breaks:
        if opts.byo_kubeconfig and not b.byo:
            raise pytest.UsageError(f"--break={b.name} damages clusters on purpose; it is refused with --byo-kubeconfig")
        if b.byo and not opts.byo_kubeconfig:
            raise pytest.UsageError(f"--break={b.name} tests the --byo-kubeconfig path; it needs --byo-kubeconfig")
    if opts.breaks:
        log.warning("deliberately broken run: %s", breaks.describe(opts.breaks))
    opts.artifacts_dir = str(Path(opts.artifacts_dir).resolve())
    if opts.byo_kubeconfig and not Path(opts.byo_kubeconfig).exists():
        raise pytest.UsageError(f"--byo-kubeconfig={opts.byo_kubeconfig}: no such file")
    if opts.byo_kubeconfig and opts.keep_clusters:
        raise pytest.UsageError("--keep-clusters has no meaning with --byo-kubeconfig (that cluster is never deleted)")
    for flag, value in (("--byo-context", opts.byo_context), ("--allow-cluster-changes", opts.allow_cluster_changes),
                        ("--node-access", opts.node_access != "auto")):
        if value and not opts.byo_kubeconfig:
            raise pytest.UsageError(f"{flag} applies to --byo-kubeconfig only (the harness's own clusters are kind "
                                    "clusters it may change)")
    from .session import guest_slot
    guest_slot(opts, "main")  # a bad --guests is a usage error before any worker starts
    if opts.kubernetes_version:
        if opts.byo_kubeconfig:
            raise pytest.UsageError("--kubernetes-version picks the release of the clusters the harness makes; with "
                                    "--byo-kubeconfig the cluster's own release is used")
        try:
            os.environ[hcfg.K8S_VERSION_ENV] = hcfg.k8s_minor(opts.kubernetes_version)
        except ValueError as e:
            raise pytest.UsageError(f"--kubernetes-version: {e}") from None
    runstate.of(config).byo = None
    if _is_worker(config):
        runstate.of(config).run_dir = Path(config.workerinput["svc_run_dir"])
        if opts.byo_kubeconfig:
            from .byo.discover import Preflight
            st = runstate.of(config)
            st.byo = Preflight.from_json((st.run_dir / "byo-preflight.json").read_text())
    else:
        if opts.help:
            return  # `pytest --help` makes nothing and leaves nothing behind
        _preflight_modes(config)
        if opts.byo_kubeconfig:
            _byo_preflight(config, asked_modes)  # before anything exists: a bad cluster ends the run here
        run_dir = hcfg.CACHE / "runs" / uuid.uuid4().hex[:12]
        run_dir.mkdir(parents=True, exist_ok=True)
        runstate.of(config).run_dir = run_dir
        from .owners import controller_owner, write_json, write_text
        write_json(run_dir / "owner.json", controller_owner().to_dict())  # the run's clusters and leases name it
        if opts.byo_kubeconfig:
            write_text(run_dir / "byo-preflight.json", runstate.of(config).byo.to_json())
        _install_sigterm_handler(config)
        from . import progress
        os.environ[progress.STEPS_ENV] = str(run_dir / "steps.jsonl")  # this process and its workers
        if config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(_XdistHooks(run_dir), "svc-harness-xdist")
            from . import progress
            os.environ[progress.ENV] = str(run_dir / "progress.log")  # workers inherit it
    if opts.upstream_conformance:
        runstate.of(config).upstream_specs = _upstream_specs(config)


def _upstream_specs(config: pytest.Config) -> list:
    """The upstream specs to collect: listed once by the controller (building e2e.test if needed),
    read by every xdist worker, so all collect the same items."""
    from .upstream import build, specs
    shared = runstate.of(config).run_dir / "upstream-specs.json"
    if _is_worker(config):
        names = json.loads(shared.read_text())
    else:
        opts = config.option
        try:
            bins = build.ensure()
            names = specs.list_specs(bins["e2e.test"], specs.focus_expression(opts.upstream_focus),
                                     opts.upstream_skip)
        except Exception as e:
            raise pytest.UsageError(f"--upstream-conformance: could not build or list upstream's e2e specs: {e}")
        if not names:
            raise pytest.UsageError(f"--upstream-conformance: --upstream-focus={opts.upstream_focus!r} with "
                                    f"--upstream-skip={opts.upstream_skip!r} selects no spec")
        from .owners import write_json
        write_json(shared, names)
        log.info("upstream e2e: %d specs selected (focus %s, skip %s)", len(names), opts.upstream_focus,
                 opts.upstream_skip)
    return specs.to_specs(names)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config):
    """suites/test_upstream.py exists only with --upstream-conformance (its items come from e2e.test)."""
    if (collection_path.name == "test_upstream.py" and collection_path.parent.name == "suites"
            and not config.option.upstream_conformance):
        return True
    return None


def _preflight_modes(config: pytest.Config) -> None:
    """Controller: stop before any cluster is made if a requested mode cannot run here."""
    from . import gate
    opts = config.option
    requested = [] if opts.byo_kubeconfig else opts.proxy_modes  # with --byo-kubeconfig the cluster's mode is found later
    unavailable = gate.unavailable_modes(requested, opts.ipvs_engine, opts.all_modes_in_guest) if not opts.help else {}
    if unavailable and not opts.skip_unavailable_modes:
        pytest.exit(gate.not_run_message(unavailable), returncode=gate.EXIT_NOT_RUN)
    runstate.of(config).gate = gate.Gate(requested=list(requested), unavailable=unavailable)
    config.pluginmanager.register(_GateHooks(runstate.of(config).gate), "svc-harness-gate")


class _GateHooks:
    """Controller only (it sees every xdist worker's reports too): the per-mode gate tally."""

    def __init__(self, gate):
        self.gate = gate
        self.experiments: dict[str, str] = {}  # test function -> experiment id
        self.engines: dict[str, str] = {}      # mode -> where its clusters ran

    def pytest_runtest_logreport(self, report) -> None:
        mode = getattr(report, "svc_proxy_mode", None)
        if not mode:
            return
        if getattr(report, "svc_experiment", None):
            self.experiments[report.nodeid.split("::")[-1].split("[")[0]] = report.svc_experiment
        if getattr(report, "svc_engine", None):
            if report.svc_engine not in self.engines.get(mode, ""):  # one per guest with several guests
                self.engines[mode] = "; ".join(filter(None, [self.engines.get(mode), report.svc_engine]))
        reason = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        self.gate.record(mode, report.when, report.outcome, reason)

    @pytest.hookimpl(tryfirst=True)  # before junitxml writes the file in its own sessionfinish
    def pytest_sessionfinish(self, session) -> None:
        from _pytest.junitxml import xml_key
        xml = session.config.stash.get(xml_key, None)
        if xml is None:
            return
        for name, value in junit_properties(self.gate.requested, self.engines, self.experiments):
            xml.add_global_property(name, value)


def junit_properties(modes: list[str], engines: dict[str, str], experiments: dict[str, str]) -> list[tuple]:
    """The run's facts as JUnit <testsuite> properties (the place xunit2 allows them)."""
    from . import config
    props = [("svc_harness.proxy_modes", ",".join(modes)),
             ("svc_harness.kubernetes_version", config.versions()["KUBERNETES_VERSION"])]
    props += [(f"svc_harness.engine.{m}", e) for m, e in sorted(engines.items())]
    props += [(f"svc_harness.experiment.{t}", e) for t, e in sorted(experiments.items())]
    return props


def _byo_preflight(config: pytest.Config, asked_modes: list[str] | None) -> None:
    """--byo-kubeconfig: reach the cluster, check it can host the experiments, and snapshot what the run
    must leave alone; a usage error (non-zero exit, nothing created) if it cannot be used."""
    from .byo import discover, snapshot
    from .kube import Kube
    opts = config.option
    try:
        pre = discover.preflight(opts.byo_kubeconfig, opts.byo_context, asked_modes)
        before = snapshot.take(Kube(opts.byo_kubeconfig, context=opts.byo_context))
    except (discover.ByoError, snapshot.SnapshotForbidden) as e:
        raise pytest.UsageError(f"--byo-kubeconfig: {e}") from None
    log.info("--byo-kubeconfig %s: %s, kube-proxy %s (%s); snapshot of %s", opts.byo_kubeconfig, pre.server, pre.mode,
             "; ".join(f"{k}: {v}" for k, v in pre.mode_sources.items()), snapshot.counts(before))
    runstate.of(config).byo = pre
    runstate.of(config).byo_before = before
    from . import engine
    runstate.of(config).byo_drops_before = engine.HostEngine().guard_drops()


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class _XdistHooks:
    """Tells each xdist worker where the run's shared state lives."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def pytest_configure_node(self, node) -> None:
        node.workerinput["svc_run_dir"] = str(self.run_dir)


def _install_sigterm_handler(config) -> None:
    """On SIGTERM or SIGHUP (a closed terminal, a dropped ssh session): stop this run's children,
    delete the clusters it created, release its engines, exit 128 + the signal.

    Done here rather than by unwinding pytest, because under xdist the
    controller can die inside execnet before sessionfinish runs. What a SIGKILL
    leaves behind, `svc-harness clean` removes.
    """
    def handler(signum, frame):
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        # The terminal or the pipe the output went to may be gone with the signal (a closed ssh
        # session, a CI runner ending the step): clean-up must not depend on it.
        run_dir = runstate.of(config).run_dir
        _output_or_file(run_dir.parent / f"abort-{run_dir.name}.log")
        log.warning("signal %d: stopping workers and deleting the clusters this run created", signum)
        from . import session
        try:
            session.abort_run(config)
        finally:
            os._exit(128 + signum)
    try:
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGHUP, handler)
    except ValueError:  # not the main thread
        pass


def _output_or_file(path: Path) -> None:
    """If stdout or stderr can no longer be written, send both to `path` instead."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(1, b"\n")  # a pipe with no reader left fails here (EPIPE)
        os.write(2, b"\n")
    except (OSError, ValueError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """--experiments E01,E04: deselect every other experiment. Upstream specs go last, so a mode's
    e2e run starts when its experiments are (nearly) done and does not compete with them."""
    items.sort(key=lambda item: item.get_closest_marker("upstream") is not None)  # stable
    _skip_upstream_specs_a_mode_cannot_pass(items)
    wanted = {e.strip().upper() for e in (config.option.experiments or "").split(",") if e.strip()}
    if not wanted:
        return
    known = {str(m.args[0]).upper() for item in items for m in item.iter_markers("experiment")}
    unknown = sorted(wanted - known)
    if unknown:
        message = (f"--experiments: unknown experiment id(s) {', '.join(unknown)}; the collected tests have "
                   f"{', '.join(sorted(known)) or 'none'}")
        if not _is_worker(config):
            raise pytest.UsageError(message)
        # A worker cannot stop the run cleanly; it selects nothing and tells the controller.
        (runstate.of(config).run_dir / "usage-error").write_text(message)
        config.hook.pytest_deselected(items=list(items))
        items[:] = []
        return
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("experiment")
        upstream = item.get_closest_marker("upstream") is not None  # selected with -k, not by id
        (keep if upstream or (marker and str(marker.args[0]).upper() in wanted) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _skip_upstream_specs_a_mode_cannot_pass(items: list) -> None:
    from .upstream.specs import mode_skip
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "upstream_spec" in params:
            why = mode_skip(params.get("proxy_mode", ""), params["upstream_spec"].name)
            if why:
                item.add_marker(pytest.mark.skip(reason=f"not run in {params['proxy_mode']}: {why}"))


# ---------------------------------------------------------------- parametrization
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "proxy_mode" in metafunc.fixturenames:
        modes = metafunc.config.option.proxy_modes
        byo = runstate.of(metafunc.config).byo
        if byo:
            modes = [byo.mode]  # the cluster's own mode, as discovered
        marker = metafunc.definition.get_closest_marker("modes")
        params = []
        for m in modes:
            marks = []
            if marker and m not in marker.args:
                why = f"experiment applies to {', '.join(marker.args)} only"
                if byo:
                    why += f"; the --byo-kubeconfig cluster's kube-proxy runs in {m} mode"
                marks.append(pytest.mark.skip(reason=why))
            params.append(pytest.param(m, marks=marks, id=m))
        metafunc.parametrize("proxy_mode", params, scope="session")
    if "upstream_spec" in metafunc.fixturenames:
        specs = runstate.of(metafunc.config).upstream_specs
        metafunc.parametrize("upstream_spec", specs, ids=[s.id for s in specs])


# ---------------------------------------------------------------- fixtures
KIND_ONLY_REASON = ("runs on a kind cluster the harness creates for it (it changes kube-proxy for the whole "
                    "cluster); this run uses --byo-kubeconfig and creates none: run without --byo-kubeconfig to include it")


@pytest.fixture(scope="session")
def proxy_mode(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def cluster(request, proxy_mode):
    """The cluster for this proxy mode (created once per run, shared by xdist workers)."""
    from . import session as clusters
    run_modes = [item.callspec.params["proxy_mode"] for item in request.session.items
                 if "proxy_mode" in getattr(getattr(item, "callspec", None), "params", {})
                 and not item.get_closest_marker("skip")]
    handle = clusters.acquire(request.config, proxy_mode, list(dict.fromkeys(run_modes)))
    yield handle
    handle.close()


@pytest.fixture
def lab(request, cluster):
    """A fresh namespace on the mode's cluster, deleted afterwards; artifacts on failure.
    In a module marked shared_namespace: the module's namespace (module_lab), with a record of its own."""
    if request.node.get_closest_marker("kind_only") and not cluster.is_kind:
        pytest.skip(KIND_ONLY_REASON)
    from .waits import slower
    if request.node.get_closest_marker("shared_namespace"):
        shared = request.getfixturevalue("module_lab")  # holds the module's claim on the cluster
        with slower(cluster.slowdown):
            yield from _test_record(request, cluster, shared.view())
        return
    with _cluster_use(request, cluster), slower(cluster.slowdown):
        the_lab = _new_lab(cluster, _namespace_name(request.node.originalname))
        yield from _test_record(request, cluster, the_lab)
        cluster.kube.delete_namespace(the_lab.ns)


@pytest.fixture(scope="module")
def module_lab(request, cluster):
    """One namespace for a module marked shared_namespace: tests that share a slow setup (E17: one
    demo app for six ipvs schedulers). Its claim on the cluster (exclusive if the module is marked
    cluster_wide) lasts from the module's first test to its last; the namespace goes after the last."""
    from .waits import slower
    with _cluster_use(request, cluster), slower(cluster.slowdown):
        the_lab = _new_lab(cluster, _namespace_name(request.module.__name__.rpartition(".")[2]))
        yield the_lab
        cluster.kube.delete_namespace(the_lab.ns)


def _cluster_use(request, cluster):
    """The claim on its cluster of a test or module: exclusive for cluster_wide ones (see harness.cluster.use)."""
    from .cluster import use
    exclusive = request.node.get_closest_marker("cluster_wide") is not None
    return use(runstate.of(request.config).run_dir / f"{cluster.name}.use.lock", exclusive, request.node.nodeid)


def _namespace_name(test_name: str) -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    base = re.sub(r"[^a-z0-9-]+", "-", test_name.lower().removeprefix("test_"))[:40].strip("-")
    return f"{base}-{worker}-{uuid.uuid4().hex[:5]}"


def _new_lab(cluster, ns: str):
    from .lab import Lab
    cluster.kube.create_namespace(ns)
    the_lab = Lab(cluster, ns)
    for b in cluster.breaks:
        if b.on_namespace:
            b.on_namespace(the_lab)
    return the_lab


def _test_record(request, cluster, the_lab):
    """Yield the test's Lab (its notes become the test's evidence); the namespace's artifacts if it failed."""
    request.node._svc_lab = the_lab
    yield the_lab
    rep = getattr(request.node, "_svc_call_report", None)
    if rep is not None and rep.failed:
        from . import artifacts
        nodes = [cluster.node(n.name) for n in cluster.nodes] if cluster.dataplane_access else []
        dest = Path(request.config.option.artifacts_dir) / cluster.mode / artifacts.safe_name(request.node.nodeid)
        artifacts.collect_failure(dest, cluster.kube, the_lab.ns, nodes)
        rep.sections.append(("svc-harness artifacts", str(dest)))


@pytest.fixture
def upstream_run(request, cluster, proxy_mode):
    """This mode's upstream e2e run: made by the first item that needs it, shared by all."""
    from .upstream import run
    from .waits import slower
    with _cluster_use(request, cluster), slower(cluster.slowdown):  # it shares the cluster with the experiments
        return run.for_mode(request.config, cluster, run.selected(request.session.items, proxy_mode),
                            runner=cluster.runner)


@pytest.fixture
def upstream_recorder(request):
    from .upstream.report import Recorder
    return Recorder(Path(request.config.option.artifacts_dir), os.environ.get("PYTEST_XDIST_WORKER", "main"))


@pytest.fixture(scope="session")
def samples(request) -> int:
    return request.config.option.samples


# ---------------------------------------------------------------- hooks
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item._svc_call_report = rep
    mode = item.callspec.params.get("proxy_mode") if hasattr(item, "callspec") else None
    marker = item.get_closest_marker("experiment")
    # Plain report attributes travel with the report to the xdist controller (_GateHooks). They are
    # not user_properties: pytest writes those inside <testcase>, which xunit2 JUnit does not allow;
    # the controller puts them into the JUnit file as testsuite properties instead.
    if mode:
        rep.svc_proxy_mode = mode
        lab = getattr(item, "_svc_lab", None)
        if lab is not None:
            rep.svc_engine = lab.cluster.engine_note
    if marker is not None and marker.args:
        rep.svc_experiment = str(marker.args[0])
    # One evidence record per experiment test, written at its last phase that matters.
    if marker is None:
        return
    if (rep.when == "call") or (rep.when == "setup" and (rep.skipped or rep.failed)):
        _record_evidence(item, marker, rep)


def _record_evidence(item, marker, rep) -> None:
    from . import breaks
    from .report import Evidence, Recorder
    lab = getattr(item, "_svc_lab", None)
    mode = item.callspec.params.get("proxy_mode", "?") if hasattr(item, "callspec") else "?"
    doc = (item.obj.__doc__ or "").strip()
    claim = " ".join(doc.split("\n\n")[0].split())
    verdict = "skip" if rep.skipped else ("fail" if rep.failed else "pass")
    detail = ""
    if rep.skipped and isinstance(rep.longrepr, tuple):
        detail = str(rep.longrepr[2])
    elif rep.failed:
        detail = str(getattr(rep.longrepr, "reprcrash", None) and rep.longrepr.reprcrash.message or rep.longrepr)[:3000]
    exp_id, title = (list(marker.args) + ["", ""])[:2]
    ev = Evidence(experiment=str(exp_id), mode=mode, title=str(title), claim=claim,
                  action="\n".join(lab.action) if lab else "", observed=list(lab.notes) if lab else [],
                  verdict=verdict, detail=detail, broken=breaks.describe(item.config.option.breaks),
                  phase=rep.when, samples=list(lab.samples) if lab else [],
                  engine=lab.cluster.engine_note if lab else "")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    Recorder(Path(item.config.option.artifacts_dir), worker).record(ev)


def pytest_sessionstart(session: pytest.Session) -> None:
    if _is_worker(session.config):
        return
    # Evidence of an earlier run must not leak into this run's report.
    d = Path(session.config.option.artifacts_dir)
    for f in [*d.glob("evidence-*.jsonl"), *d.glob("upstream-*.jsonl")]:
        f.unlink()
    runstate.of(session.config).started = time.monotonic()
    opts = session.config.option
    if getattr(opts, "numprocesses", None) and session.config.get_verbosity() >= 0:
        # The workers' progress (cluster creation, long waits), which xdist would not show.
        from .progress import Tailer
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            st = runstate.of(session.config)
            st.tailer = Tailer(st.run_dir / "progress.log",
                               lambda line: tr.write_line(f"svc-harness {line}")).start()
    # (The guards' counters are read when a cluster is made or attached: a run that makes none,
    # like the unit tests, touches nothing of the machine.)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if _is_worker(config):
        return
    if runstate.of(config).tailer:
        runstate.of(config).tailer.stop()
    from . import gate
    from . import session as clusters
    changed = False
    if config.option.byo_kubeconfig:
        from .byo import attach
        runstate.of(config).byo_summary, changed = attach.finish(config)
    usage = runstate.of(config).run_dir / "usage-error"
    if usage.exists():  # a worker found an unknown --experiments id
        runstate.of(config).usage_error = usage.read_text()
        session.exitstatus = pytest.ExitCode.USAGE_ERROR
    if changed and session.exitstatus in (0, 5):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # the cluster was not left as found
    the_gate = runstate.of(config).gate
    if the_gate is not None and session.exitstatus == pytest.ExitCode.OK and the_gate.not_run() \
            and not config.option.skip_unavailable_modes:
        session.exitstatus = gate.EXIT_NOT_RUN
    clusters.finish_run(config, failed=exitstatus not in (0, 5), gate=the_gate)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: F811
    if _is_worker(config):
        return
    for line in [*runstate.of(config).byo_summary, *runstate.of(config).summary]:
        terminalreporter.write_line(line)
    if runstate.of(config).usage_error:
        terminalreporter.write_line(f"ERROR: {runstate.of(config).usage_error}", red=True)
    the_gate = runstate.of(config).gate
    if the_gate is not None and the_gate.verdicts():
        terminalreporter.write_sep("=", "svc-harness gate: one verdict per mode")
        for line in the_gate.lines():
            verdict = line.split(": ", 1)[1]
            terminalreporter.write_line(line, green=verdict.startswith("PASS"), red=not verdict.startswith("PASS"))
