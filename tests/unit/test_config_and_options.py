"""Pure parts of the harness: option parsing, kind config rendering, pins, pools, parsing."""
import ipaddress
from pathlib import Path

import pytest
import yaml

from harness import config, engine, images, loadbalancer, modes, plugin
from harness.cluster import render_kind_config
from harness.probe import ProbeOutputLost, Sample, probe_argv, probe_records, read_records
from harness.runner import CommandError, FakeRunner, Result


# ---- --proxy-mode -----------------------------------------------------------
def test_modes_default_to_iptables():
    assert plugin.parse_modes(None) == ["iptables"]


def test_modes_comma_separated_and_repeated_keep_order_without_repeats():
    assert plugin.parse_modes(["nftables,iptables", "ipvs", "iptables"]) == ["nftables", "iptables", "ipvs"]


def test_userspace_is_refused_with_its_removal_version():
    with pytest.raises(pytest.UsageError, match="removed in Kubernetes v1.26"):
        plugin.parse_modes(["userspace"])


def test_unknown_mode_is_a_usage_error():
    with pytest.raises(pytest.UsageError, match="unknown mode"):
        plugin.parse_modes(["iptable"])


# Options other pytest plugins for Kubernetes (and pytest-parallel) register, read from their wheels. pytest refuses
# to start when two plugins in one run add the same option.
OTHER_PLUGINS_OPTIONS = {
    "pytest-kind 22.11.1": {"--cluster-name", "--keep-cluster", "--kind-bin", "--kind-image",
                            "--kind-kubectl-bin", "--kubeconfig"},
    "pytest-kubernetes 0.9.0": {"--k8s-cluster-name", "--k8s-kubeconfig", "--k8s-kubeconfig-override",
                                "--k8s-provider", "--k8s-provider-config", "--k8s-version"},
    "kubetest 0.9.5": {"--in-cluster", "--kube-config", "--kube-context", "--kube-disable",
                       "--kube-error-log-lines", "--kube-log-level", "--suppress-insecure-request"},
    "pytest-parallel 0.1.1": {"--workers", "--tests-per-worker"},
}


def _our_options() -> set[str]:
    names: set[str] = set()

    class Group:
        def addoption(self, *opts, **_):
            names.update(opts)

    class Parser:
        def getgroup(self, *_a, **_k):
            return Group()

        addoption = Group.addoption

    plugin.pytest_addoption(Parser())
    return names


@pytest.mark.parametrize("other", sorted(OTHER_PLUGINS_OPTIONS))
def test_options_do_not_collide_with_other_kubernetes_pytest_plugins(other):
    ours = _our_options()
    assert "--proxy-mode" in ours and len(ours) > 20
    assert not ours & OTHER_PLUGINS_OPTIONS[other], f"{other} registers these too"


def test_the_plugin_is_loaded_by_the_checkouts_conftest_not_for_every_pytest_run():
    assert "pytest11" not in (config.REPO / "pyproject.toml").read_text()
    assert 'pytest_plugins = ["harness.plugin"]' in (config.REPO / "conftest.py").read_text()


@pytest.mark.parametrize("text", ["0", "-1", "two"])
def test_workers_must_be_a_positive_whole_number(text):
    with pytest.raises(pytest.UsageError):
        plugin._positive_int(text)


@pytest.mark.parametrize("name", ["Svc", "a_b", "-x", "x" * (plugin.CLUSTER_PREFIX_MAX + 1)])
def test_cluster_names_must_be_dns_labels(name):
    with pytest.raises(pytest.UsageError):
        plugin._cluster_prefix(name)


def test_the_longest_cluster_name_still_gives_node_hostnames_under_64():
    prefix = plugin._cluster_prefix("x" * plugin.CLUSTER_PREFIX_MAX)
    longest = f"{prefix}-nftables-49-control-plane"
    assert len(longest) <= 64


@pytest.mark.parametrize("text", ['{"mode": "ipvs"}', '{"kind": "KubeletConfiguration"}', '{"apiVersion": "v1"}'])
def test_kube_proxy_config_cannot_contradict_the_mode_or_retarget_the_patch(text):
    with pytest.raises(pytest.UsageError, match="not allowed"):
        plugin._json_object(text)


def test_kube_proxy_config_must_be_a_json_object():
    assert plugin._json_object('{"iptables": {"masqueradeAll": true}}') == {"iptables": {"masqueradeAll": True}}
    with pytest.raises(pytest.UsageError):
        plugin._json_object("[1]")
    with pytest.raises(pytest.UsageError):
        plugin._json_object("{nope")


def test_top_level_masquerade_all_is_refused_with_where_it_belongs():
    # kube-proxy silently drops it there: a run "with masqueradeAll" would change nothing.
    with pytest.raises(pytest.UsageError, match='under "iptables" or "nftables"'):
        plugin._json_object('{"masqueradeAll": true}')


# ---- kind config rendering ------------------------------------------------------
@pytest.mark.parametrize("mode", config.PROXY_MODES)
def test_kind_config_sets_mode_and_node_list(mode):
    cfg = yaml.safe_load(render_kind_config(mode, workers=3))
    assert cfg["networking"]["kubeProxyMode"] == mode
    assert [n["role"] for n in cfg["nodes"]] == ["control-plane", "worker", "worker", "worker"]
    if mode == "ipvs":  # MetalLB's L2 mode needs strictARP under ipvs (see kind-configs/ipvs.yaml)
        (patch,) = cfg["kubeadmConfigPatches"]
        assert yaml.safe_load(patch) == {"kind": "KubeProxyConfiguration", "ipvs": {"strictARP": True}}
    else:
        assert "kubeadmConfigPatches" not in cfg


def test_kind_config_carries_kube_proxy_patch():
    cfg = yaml.safe_load(render_kind_config("iptables", 2, {"iptables": {"masqueradeAll": True}}))
    (patch,) = cfg["kubeadmConfigPatches"]
    doc = yaml.safe_load(patch)
    assert doc["kind"] == "KubeProxyConfiguration" and doc["iptables"]["masqueradeAll"] is True


def test_the_callers_kubeadm_patches_come_before_the_engines():
    from harness.bench.scale import CONTROLLER_MANAGER_PATCH
    cfg = yaml.safe_load(render_kind_config("nftables", 1, engine_tuning={"kubeadm_patches": ["kind: X\n"]},
                                            kubeadm_patches=[CONTROLLER_MANAGER_PATCH]))
    mine, engines = cfg["kubeadmConfigPatches"]
    assert yaml.safe_load(mine)["controllerManager"]["extraArgs"]["kube-api-qps"] == "200" and engines == "kind: X\n"


def test_kind_config_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown proxy mode"):
        render_kind_config("userspace")
    with pytest.raises(ValueError):
        render_kind_config("iptables", workers=-1)


def test_kind_config_for_a_guest_engine_sets_api_address_and_patches():
    import yaml
    cfg = yaml.safe_load(render_kind_config("ipvs", workers=0, engine_tuning={
        "networking": {"apiServerAddress": "10.253.0.2", "apiServerPort": 16443},
        "kubeadm_patches": ["kind: ClusterConfiguration\n"]}))
    assert cfg["nodes"] == [{"role": "control-plane"}]
    assert cfg["networking"] == {"kubeProxyMode": "ipvs", "apiServerAddress": "10.253.0.2", "apiServerPort": 16443}
    assert cfg["kubeadmConfigPatches"][1:] == ["kind: ClusterConfiguration\n"]


# ---- pins and image definitions -------------------------------------------------
def test_versions_are_pinned_in_one_file():
    v = config.versions()
    for key in ("KUBERNETES_VERSION", "KIND_VERSION", "ETCD_VERSION", "COREDNS_VERSION", "PAUSE_IMAGE_TAG",
                "CRICTL_VERSION", "METALLB_VERSION", "DEBIAN_SUITE"):
        assert v.get(key), f"{key} missing from images/versions.env"
    assert config.k8s_minor() in config.k8s_minors()


def test_go_module_templates_pin_a_release_the_harness_offers():
    # The builds pin copies of these (Builder.work_module); the templates start from one release.
    v = config.versions("1.34")
    expect = {"k8s": f"k8s.io/kubernetes {v['KUBERNETES_VERSION']}", "etcd": f"etcd/server/v3 {v['ETCD_VERSION']}",
              "coredns": f"coredns/coredns {v['COREDNS_VERSION']}", "crictl": f"cri-tools {v['CRICTL_VERSION']}",
              "metallb": f"metallb {v['METALLB_VERSION']}"}
    for module, needle in expect.items():
        assert needle in (config.IMAGES_DIR / module / "go.mod").read_text(), f"images/{module}/go.mod != {needle}"


def test_control_plane_images_use_the_names_kubeadm_asks_for():
    v = config.versions()
    refs = {i.node_ref for i in images.cluster_images(v).values() if i.node_ref}
    k = v["KUBERNETES_VERSION"]
    assert {f"registry.k8s.io/kube-apiserver:{k}", f"registry.k8s.io/kube-proxy:{k}",
            f"registry.k8s.io/etcd:{v['ETCD_IMAGE_TAG']}", f"registry.k8s.io/pause:{v['PAUSE_IMAGE_TAG']}",
            f"registry.k8s.io/coredns/coredns:{v['COREDNS_VERSION']}"} <= refs


def test_k8s_ldflags_stamp_the_version():
    flags = images.k8s_ldflags("v1.34.4")
    assert "k8s.io/component-base/version.gitVersion=v1.34.4" in flags
    assert "gitMinor=34" in flags


def test_static_image_dockerfile():
    img = images.static_image("x/pause:1", "pause", ["/pause"], dest="/pause")
    assert img.dockerfile.splitlines()[0] == "FROM scratch"
    assert 'ENTRYPOINT ["/pause"]' in img.dockerfile


# ---- engine: preflight and guard ------------------------------------------------
def test_ipvs_preflight_names_the_missing_kernel_feature(tmp_path):
    reason = engine.ipvs_missing_reason(proc=tmp_path / "proc", modules=tmp_path / "modules")
    assert "no IPVS" in reason and "iptables or nftables" in reason


def test_ipvs_preflight_passes_when_the_kernel_has_it(tmp_path):
    (tmp_path / "proc" / "net").mkdir(parents=True)
    (tmp_path / "proc" / "net" / "ip_vs").write_text("")
    assert engine.ipvs_missing_reason(proc=tmp_path / "proc", modules=tmp_path / "modules") is None


def test_egress_guard_check_fails_without_the_rule():
    fake = (FakeRunner()
            .on_api("inspect network", {"Id": "0123456789abcdef"})
            .on(["ip", "-o", "route"], stdout="default via 192.0.2.1 dev eth0\n")
            .on(["iptables", "-C"], returncode=1))
    with pytest.raises(engine.PreflightError, match="egress guard missing"):
        engine.check_egress_guard(fake)
    assert ["iptables", "-C", "DOCKER-USER", "-i", "br-0123456789ab", "-o", "eth0", "-m", "comment",
            "--comment", engine.GUARD_COMMENT, "-j", "DROP"] in fake.calls


def test_egress_drop_counter_sums_only_the_guard_rule():
    listing = ("Chain DOCKER-USER (1 references)\n pkts bytes target prot opt in out source destination\n"
               f"    3   180 REJECT 17 -- br-x eth0 0.0.0.0/0 0.0.0.0/0 udp dpt:53 /* {engine.DNS_COMMENT} */\n"
               f"    2   120 DROP   0  -- br-x eth0 0.0.0.0/0 0.0.0.0/0 /* {engine.GUARD_COMMENT} */\n")
    fake = FakeRunner().on(["iptables", "-L"], stdout=listing)
    assert engine.egress_drops(fake) == 2
    assert engine.egress_drops(fake, comment=engine.DNS_COMMENT) == 3


def test_command_errors_show_the_command_and_output():
    fake = FakeRunner().on(["kind"], returncode=1, stderr="boom")
    with pytest.raises(CommandError, match=r"exit 1.*kind create cluster(.|\n)*boom"):
        fake.run(["kind", "create", "cluster"], what="creating")


# ---- small parsers -----------------------------------------------------------------
def test_metallb_pools_are_inside_the_kind_network_and_disjoint_per_mode():
    pools = [loadbalancer.pool_range("172.18.0.0/16", m) for m in config.PROXY_MODES]
    assert pools[0] == ("172.18.255.200", "172.18.255.215")
    net = ipaddress.ip_network("172.18.0.0/16")
    ranges = [range(int(ipaddress.ip_address(a)), int(ipaddress.ip_address(b)) + 1) for a, b in pools]
    assert all(ipaddress.ip_address(r[-1]) in net for r in ranges)
    assert not set(ranges[0]) & set(ranges[1]) and not set(ranges[1]) & set(ranges[2])


def test_metallb_announcing_node_is_the_latest_event():
    class FakeKube:
        def event_messages(self, name, namespace, reason):
            assert (name, reason) == ("svc", "nodeAssigned")
            return ['announcing from node "kind-worker" with protocol "layer2"', "something else",
                    'announcing from node "kind-worker2" with protocol "layer2"']
    assert loadbalancer.announcing_node(FakeKube(), "svc", "ns") == "kind-worker2"


def test_metallb_announcing_nodes_are_the_speakers_current_l2_statuses():
    from kubernetes.client import ApiException

    class FakeCustom:
        def __init__(self, items=None, status=None):
            self.items, self.status = items, status

        def list_cluster_custom_object(self, group, version, plural, label_selector):
            assert (group, plural) == ("metallb.io", "servicel2statuses")
            assert label_selector == "metallb.io/service-name=svc,metallb.io/service-namespace=ns"
            if self.status:
                raise ApiException(status=self.status)
            return {"items": [{"metadata": {"labels": {"metallb.io/node": n}}} for n in self.items]}

    class FakeKube:
        def __init__(self, custom):
            self.custom = custom

        def event_messages(self, name, namespace, reason):
            return ['announcing from node "kind-worker" with protocol "layer2"']
    # two speakers that have not found each other both announce: both are reported
    assert loadbalancer.announcing_nodes(FakeKube(FakeCustom(["kind-worker", "kind-worker2"])), "svc", "ns") == {
        "kind-worker", "kind-worker2"}
    assert loadbalancer.announcing_nodes(FakeKube(FakeCustom([])), "svc", "ns") == set()
    # MetalLB without ServiceL2Status (before v0.14): the latest event
    assert loadbalancer.announcing_nodes(FakeKube(FakeCustom(status=404)), "svc", "ns") == {"kind-worker"}
    with pytest.raises(ApiException):
        loadbalancer.announcing_nodes(FakeKube(FakeCustom(status=403)), "svc", "ns")


def test_arp_answers_are_the_macs_that_replied():
    out = ("ARPING 172.18.255.200 from 172.18.0.5 eth0\n"
           "Unicast reply from 172.18.255.200 [02:42:AC:12:00:03]  0.680ms\n"
           "Unicast reply from 172.18.255.200 [02:42:AC:12:00:02]  0.702ms\n"
           "Unicast reply from 172.18.255.200 [02:42:AC:12:00:03]  0.590ms\n"
           "Sent 3 probes (1 broadcast(s))\nReceived 3 response(s)\n")
    fake = FakeRunner().on(["arping"], stdout=out)
    from harness.peers import ExternalPeer
    peer = ExternalPeer("host", "172.18.0.1", "external", fake, container="")
    assert loadbalancer.arp_answers(peer, "172.18.255.200") == {"02:42:ac:12:00:03", "02:42:ac:12:00:02"}


def test_using_proxier_log_line():
    assert modes.parse_using_line('I1125 server_linux.go:53] "Using iptables Proxier"') == "iptables"
    assert modes.parse_using_line("Using nftables Proxier") == "nftables"
    assert modes.parse_using_line("nothing here") is None


def test_data_plane_line_matching_needs_all_needles_on_one_line():
    text = "-A KUBE-SVC-X -m comment --comment ns1/svc -m recent --rcheck\n-A KUBE-SVC-Y ns2/svc\n"
    assert modes.has_line(text, ("ns1", "--rcheck"))
    assert not modes.has_line(text, ("ns2", "--rcheck"))


def test_ipvs_data_plane_reads_iptables_only_when_the_virtual_servers_lack_the_line():
    class Node:
        def __init__(self, ipvs: str):
            self.out, self.calls = {"ipvsadm": ipvs, "iptables-save": "-A KUBE-SERVICES 10.96.0.9 ns/svc\n"}, []

        def exec(self, argv, check=True):
            self.calls.append(argv[0])
            return type("Result", (), {"stdout": self.out[argv[0]]})()
    node = Node("TCP  10.96.0.9:80 sh\n")
    assert modes.dataplane_has(node, "ipvs", ("10.96.0.9", "sh")) and node.calls == ["ipvsadm"]
    node = Node("")
    assert modes.dataplane_has(node, "ipvs", ("10.96.0.9", "ns/svc")) and node.calls == ["ipvsadm", "iptables-save"]
    assert not modes.dataplane_has(Node(""), "ipvs", ("10.96.0.9", "rr"))
    assert modes.dataplane_has(Node(""), "iptables", ("ns/svc",))


def test_ipvs_scheduler_is_rr_where_the_config_map_leaves_it_empty():
    class Kube:
        def __init__(self, conf: str):
            cm = type("CM", (), {"data": {"config.conf": conf}})()
            self.core = type("Core", (), {"read_namespaced_config_map": lambda _self, name, ns: cm})()
    assert modes.ipvs_scheduler(Kube("mode: ipvs\nipvs:\n  scheduler: ''\n")) == "rr"
    assert modes.ipvs_scheduler(Kube("mode: ipvs\n")) == "rr"
    assert modes.ipvs_scheduler(Kube("mode: ipvs\nipvs:\n  scheduler: sh\n")) == "sh"


def test_probe_output_parses_into_records():
    out = ('{"i":0,"status":200,"server_name":"a","client_ip":"10.0.0.1","server_ip":"10.0.0.9",'
           '"latency_ms":1.5,"kind":"ok","error":""}\n'
           '{"i":1,"status":0,"kind":"refused","error":"connection refused"}\nnoise\n{"end":2}\n')
    s = Sample.from_records("src", "dst", read_records(out), seconds=0.5)
    assert [r.kind for r in s.records] == ["ok", "refused"]
    assert s.backends() == {"a": 1} and s.requests_per_second == 4.0
    assert s.curl_lines(1) == ["iKubernetes demoapp v1.0 !! ClientIP: 10.0.0.1, ServerName: a, ServerIP: 10.0.0.9!"]


@pytest.mark.parametrize("out", [
    "",                                                    # everything lost, exit 0 (seen in CI)
    '{"i":0,"kind":"ok"}\n',                              # cut before the end line
    '{"i":0,"kind":"ok"}\n{"end":2}\n',                  # a record missing in the middle
    '{"i":0,"kind":"ok"}\n{"i":1,"ki\n',                 # cut inside a record
])
def test_probe_output_without_its_end_line_is_lost_not_observed(out):
    with pytest.raises(ProbeOutputLost):
        read_records(out)


def test_lost_probe_output_runs_the_probe_once_more_then_errors():
    class Peer:
        def __init__(self, outputs):
            self.outputs, self.calls = list(outputs), 0

        def describe(self):
            return "pod p"

        def exec(self, argv, timeout):
            self.calls += 1
            return Result(argv, 0, self.outputs.pop(0), "", 0.1)

    whole = '{"i":0,"kind":"ok"}\n{"end":1}\n'
    peer = Peer(["", whole])
    assert probe_records(peer, ["svc-probe"], timeout=5) == [{"i": 0, "kind": "ok"}] and peer.calls == 2
    peer = Peer(["", '{"i":0,"kind":"ok"}\n', whole])
    with pytest.raises(ProbeOutputLost, match="lost 2 times"):
        probe_records(peer, ["svc-probe"], timeout=5)
    assert peer.calls == 2


def test_probe_argv_is_bounded_in_count_and_time():
    argv = probe_argv("http://10.96.0.1:80/", 300, timeout_s=2, max_duration_s=60)
    assert argv[argv.index("-n") + 1] == "300" and argv[argv.index("-max-duration") + 1] == "60s"


def test_nodes_still_tainted_not_ready_are_named():
    # kind returns with nodes Ready while the lifecycle controller's taint is still on (seen in CI).
    from harness.cluster import _not_ready_tainted
    r = FakeRunner().on(["kubectl"], stdout="a=\nb=node.kubernetes.io/not-ready\nc=node-role.kubernetes.io/control-plane\n")
    assert _not_ready_tainted(["kubectl"], r) == ["b"]


def test_ipv6_from_the_kind_network_is_dropped_too():
    fake = (FakeRunner()
            .on_api("inspect network", {"Id": "0123456789abcdef"})
            .on(["ip", "-o", "route"], stdout="default via 192.0.2.1 dev eth0\n")
            .on(["iptables", "-C"], returncode=1)
            .on(["ip6tables", "-C"], returncode=1))
    with pytest.raises(engine.PreflightError):  # the v4 check still fails in this fake: the rule "never lands"
        engine.ensure_egress_guard(fake)
    assert ["ip6tables", "-I", "FORWARD", "-i", "br-0123456789ab", "-m", "comment", "--comment",
            engine.GUARD_COMMENT, "-j", "DROP"] in fake.calls


def test_a_missing_ipv6_guard_stops_the_run_only_where_the_host_forwards_ipv6(tmp_path, monkeypatch):
    from harness.engine import base
    fake = FakeRunner().on(["ip6tables", "-C"], returncode=1)
    monkeypatch.setattr(base, "IPV6_FORWARDING", tmp_path / "forwarding")
    (tmp_path / "forwarding").write_text("0\n")
    base.check_v6_guard(fake, "br-x")
    (tmp_path / "forwarding").write_text("1\n")
    with pytest.raises(engine.PreflightError, match="IPv6 egress guard missing"):
        base.check_v6_guard(fake, "br-x")


# ---- Kubernetes releases (--kubernetes-version) --------------------------------------------
def test_a_kubernetes_minor_is_resolved_to_its_pins(monkeypatch):
    monkeypatch.delenv(config.K8S_VERSION_ENV, raising=False)
    assert {"1.34", "1.37"} <= set(config.k8s_minors())
    assert config.k8s_minor("1.37") == config.k8s_minor("v1.37") == config.k8s_minor("v1.37.2") == "1.37"
    assert config.versions("1.37")["KUBERNETES_VERSION"] == "v1.37.2"
    assert config.versions("1.37")["KIND_VERSION"] == config.versions("1.34")["KIND_VERSION"]  # shared pins
    monkeypatch.setenv(config.K8S_VERSION_ENV, "1.37")
    assert config.versions()["KUBERNETES_VERSION"] == "v1.37.2"
    assert config.version_bin().name == "v1.37.2" and config.node_image_tag() == "svc-harness/node:v1.37.2"
    for bad, said in (("1.12", "no pins for it"), ("1.37.0", "pins v1.37.2")):
        with pytest.raises(ValueError, match=said):
            config.k8s_minor(bad)


def test_every_kubernetes_minor_pins_the_same_keys():
    keys = {m: set(config._env_file(config.KUBERNETES_PINS / f"v{m}.env")) for m in config.k8s_minors()}
    first = next(iter(keys.values()))
    assert all(k == first for k in keys.values()), keys
    assert {"KUBERNETES_VERSION", "ETCD_VERSION", "ETCD_IMAGE_TAG", "COREDNS_VERSION", "PAUSE_IMAGE_TAG",
            "CRICTL_VERSION", "AGNHOST_VERSION", "UPSTREAM_NODE_IMAGE"} <= first


def test_kubelet_on_cgroup_v1_is_allowed_only_where_needed():
    from harness.cluster import kubelet_settings
    assert kubelet_settings("v1.37.2", 1) == {"failCgroupV1": False}
    assert kubelet_settings("v1.35.4", 1) == {"failCgroupV1": False}
    assert kubelet_settings("v1.34.4", 1) == {} and kubelet_settings("v1.37.2", 2) == {}
    cfg = yaml.safe_load(render_kind_config("iptables", kubelet={"failCgroupV1": False}))
    patch = yaml.safe_load(cfg["kubeadmConfigPatches"][-1])
    assert patch == {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
                     "failCgroupV1": False}


def test_builds_of_one_release_go_to_its_own_folder():
    v = config.versions("1.37")
    builds = {b.name: b for b in images.go_builds(v)}
    kbin = config.BIN / "v1.37.2"
    assert builds["kubernetes"].outputs()[0].parent == kbin and builds["etcd"].out_dir == kbin
    assert builds["kubernetes"].stamp_name == "go-kubernetes-v1.37.2"
    assert builds["tools"].out_dir == config.BIN and builds["tools"].stamp_name == "go-tools"
    refs = {i.node_ref: i for i in images.cluster_images(v).values() if i.node_ref}
    assert refs["registry.k8s.io/etcd:3.7.0-0"].files["etcd"] == kbin / "etcd"
    assert images.agnhost_ref(v) == "registry.k8s.io/e2e-test-images/agnhost:2.66.1"


def test_releases_asking_for_one_agnhost_tag_share_one_build():
    # Two builds under one tag would replace each other's image at every build of either release.
    default = config.versions(config.versions()["KUBERNETES_DEFAULT"])
    shared = images.agnhost_build(default)
    assert shared.versions["KUBERNETES_VERSION"] == default["KUBERNETES_VERSION"]
    for minor in config.k8s_minors():
        v = config.versions(minor)
        b, img = images.agnhost_build(v), images.agnhost_image(v, FakeRunner().on(["go", "mod", "download"], stdout='{"Dir": "/k"}'))
        assert img.tag == images.agnhost_ref(v)
        if v["AGNHOST_VERSION"] == default["AGNHOST_VERSION"]:
            assert b == shared and img.files["agnhost"] == shared.outputs()[0]
        else:
            assert b.pins == {"k8s.io/kubernetes": v["KUBERNETES_VERSION"]} and b.out_dir == config.version_bin(v)
            assert img.files["agnhost"] == config.version_bin(v) / "agnhost"


def test_a_pinned_build_works_in_a_copy_and_leaves_the_checkout_alone(tmp_path, monkeypatch):
    from harness.runner import FakeRunner
    monkeypatch.setattr(config, "CACHE", tmp_path)
    b = images.go_builds(config.versions("1.37"))[1]
    before = (config.IMAGES_DIR / b.module / "go.mod").read_text()
    release = tmp_path / "k8s-release"  # the release's own go.mod: a staging module the template lacks
    release.mkdir()
    (release / "go.mod").write_text("module k8s.io/kubernetes\nreplace (\n\tk8s.io/cri-streaming => "
                                    "./staging/src/k8s.io/cri-streaming\n)\n")
    runner = FakeRunner().on(["go", "mod", "download"], stdout='{"Dir": "%s"}' % release)
    work = images.Builder(runner).work_module(b)
    assert work.parent == tmp_path / "gomod" and (work / ".pinned").exists() and (work / "tools.go").exists()
    edit = next(c for c in runner.calls if c[:3] == ["go", "mod", "edit"])
    assert "-require=k8s.io/kubernetes@v1.37.2" in edit
    assert "-replace=k8s.io/cri-streaming=k8s.io/cri-streaming@v0.37.2" in edit
    assert "-replace=k8s.io/api=k8s.io/api@v0.37.2" in edit
    assert (config.IMAGES_DIR / b.module / "go.mod").read_text() == before
    calls = len(runner.calls)
    assert images.Builder(runner).work_module(b) == work and len(runner.calls) == calls  # made once


def test_an_older_kind_is_refused_with_the_way_out():
    from harness.cluster import ClusterError, check_kind_version
    from harness.runner import FakeRunner
    want = config.versions()["KIND_VERSION"]
    check_kind_version(FakeRunner().on(lambda a: a[-1] == "version", stdout=f"kind {want} go1.26 linux/amd64"))
    check_kind_version(FakeRunner().on(lambda a: a[-1] == "version", stdout="kind v9.0.0 go1.26 linux/amd64"))
    with pytest.raises(ClusterError, match=f"go install sigs.k8s.io/kind@{want}"):
        check_kind_version(FakeRunner().on(lambda a: a[-1] == "version", stdout="kind v0.30.0 go1.26 linux/amd64"))


def test_an_image_on_a_rebuilt_base_is_rebuilt(tmp_path):
    """kube-proxy's Dockerfile names its base in FROM: the base's own inputs count, so a changed
    netbase rebuilds kube-proxy (it once kept the old Debian base)."""
    from harness.runner import FakeRunner
    binary = tmp_path / "kube-proxy"
    binary.write_text("x")
    img = images.on_base("x/kube-proxy:1", "x/netbase:v1", "kube-proxy", src=tmp_path)

    def built(base_inputs):
        runner = FakeRunner().on_api("inspect image x/netbase:v1", base_inputs).on_api("inspect image", "stale")
        images.Builder(runner).image(img)
        return next(c[1] for c in runner.calls if c[0] == "engine" and c[1].startswith("build x/kube-proxy:1"))

    assert built("netbase-old") != built("netbase-new")


def test_a_repository_file_counts_by_content_not_by_its_clones_mtime(tmp_path):
    """Every clone gives images/slim.sh a new mtime; a fresh CI clone must not rebuild the images."""
    import os
    from harness.images import _hash
    f = config.IMAGES_DIR / "slim.sh"
    before = _hash(f)
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        assert _hash(f) == before
    finally:
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_an_image_with_two_tags_is_saved_under_the_one_asked_for(tmp_path):
    # Two releases' pause builds can be byte-identical: one image, two tags. The node image
    # imports the save and tags it by the name asked for, so the save must carry that name.
    from harness.images import _save

    class Img:
        tags = ["svc-harness/pause:3.10.1", "svc-harness/pause:3.10.2"]

        def save(self, named):
            assert named in self.tags
            return [named.encode()]

    class Client:
        class images:
            get = staticmethod(lambda tag: Img())

    _save(Client(), "svc-harness/pause:3.10.2", tmp_path / "t")
    assert (tmp_path / "t").read_text() == "svc-harness/pause:3.10.2"
