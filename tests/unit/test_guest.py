"""Pure parts of the guest engine: engine choice, the runner seam, kind tuning, mconsole framing."""
import struct

from harness import engine
from harness.cluster import runner_for
from harness.guest import mconsole, vm
from harness.runner import FakeRunner, Runner


def test_ipvs_goes_to_the_guest_only_when_the_host_lacks_ipvs_or_it_is_forced(monkeypatch):
    monkeypatch.setattr(engine, "ipvs_missing_reason", lambda: "no IPVS")
    assert engine.choose("ipvs", "auto").kind == "guest"
    assert engine.choose("ipvs", "guest").kind == "guest"
    host_only = engine.choose("ipvs", "host")
    assert host_only.kind == "host" and "--ipvs-engine=host" in host_only.unavailable_reason("ipvs")
    for mode in ("iptables", "nftables"):
        assert engine.choose(mode, "guest").kind == "host"
        assert engine.choose(mode, "auto").unavailable_reason(mode) is None
    monkeypatch.setattr(engine, "ipvs_missing_reason", lambda: None)
    assert engine.choose("ipvs", "auto").kind == "host"
    assert engine.choose("ipvs", "guest").kind == "guest"


def test_every_mode_goes_to_the_guest_when_asked_never_with_ipvs_engine_host():
    import pytest
    for mode in ("iptables", "nftables", "ipvs"):
        assert engine.choose(mode, "auto", every_mode_in_guest=True).kind == "guest"
    with pytest.raises(ValueError, match="--ipvs-engine=host"):
        engine.choose("iptables", "host", every_mode_in_guest=True)


def test_a_guest_engine_is_reached_with_tls_client_credentials_only():
    g = vm.Guest()
    env = g.docker_env()
    assert env["DOCKER_HOST"] == f"tcp://10.253.0.2:{vm.DOCKER_PORT}" and vm.DOCKER_PORT != 2375
    assert env["DOCKER_TLS_VERIFY"] == "1" and env["DOCKER_CERT_PATH"] == str(g.tls_dir)
    assert "--tlsverify" in g.docker_argv() and g.runner().env == env


def test_a_guest_runner_carries_docker_host_and_leaves_the_default_alone():
    base = Runner()
    g = base.on_engine({"DOCKER_HOST": "tcp://10.253.0.2:2375"}, where="guest x")
    assert g.env == {"DOCKER_HOST": "tcp://10.253.0.2:2375"} and g.where == "guest x"
    assert base.env == {} and base.where == "host"
    out = g.run(["sh", "-c", "echo $DOCKER_HOST"]).stdout.strip()
    assert out == "tcp://10.253.0.2:2375"


def test_the_egress_guard_of_a_guest_engine_is_the_link_rule():
    r = FakeRunner().on(["iptables", "-C"], returncode=1).on_engine({"DOCKER_HOST": "tcp://10.253.0.6:2376"}, "guest")
    engine.ensure_egress_guard(r)
    assert ["iptables", "-I", *vm.Link(1).guard_rule] in r.calls and "svcg1" in vm.Link(1).guard_rule
    assert not any("DOCKER-USER" in c for c in r.calls)


def test_each_guest_has_its_own_name_link_and_leases():
    from harness.guest.engine import GuestEngine
    a, b = GuestEngine(index=0), GuestEngine(index=1)
    assert (a.guest.cfg.name, b.guest.cfg.name) == ("svc-harness-guest", "svc-harness-guest-2")
    assert (a.guest.link.host, a.guest.link.guest, b.guest.link.host, b.guest.link.guest) == (
        "10.253.0.1", "10.253.0.2", "10.253.0.5", "10.253.0.6")
    assert a.guest.docker_host != b.guest.docker_host and a.guest.tls_dir != b.guest.tls_dir
    assert a.leases.dir != b.leases.dir and a.guest.disk("k") != b.guest.disk("k")
    assert (a.cluster_suffix, b.cluster_suffix) == ("", "-g2")
    assert engine.from_marker(b.marker()).guest.cfg.name == "svc-harness-guest-2"
    assert engine.from_marker({"engine": "guest", "guest": "svc-harness-guest"}).guest.cfg.index == 0
    assert vm.Link.of_docker_host(b.guest.docker_host) == vm.Link(1)
    assert vm.kind_tuning("x", 1, link=b.guest.link)["networking"]["apiServerAddress"] == "10.253.0.6"


def test_a_worker_gets_a_guest_of_its_own_up_to_one_per_cpu(monkeypatch):
    import os
    import pytest
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert engine.guest_slots("auto", 0, "main") == (0, 1)      # no xdist: one guest
    assert engine.guest_slots("auto", 2, "gw0") == (0, 2)
    assert engine.guest_slots("auto", 2, "gw1") == (1, 2)
    assert engine.guest_slots("auto", 4, "gw3") == (1, 2)       # at most one per CPU
    assert engine.guest_slots("1", 2, "gw1") == (0, 1)          # every worker shares one
    for bad in ("0", "99"):
        with pytest.raises(ValueError, match="--guests"):
            engine.guest_slots(bad, 2, "gw0")
    shared = engine.choose("ipvs", "guest", slot=1, guests=2)
    assert shared.guest.cfg.index == 1 and shared.guest.cfg.mem == engine.GUEST_MEM_SHARED
    assert engine.choose("ipvs", "guest").guest.cfg.mem != engine.GUEST_MEM_SHARED


def test_kind_tuning_publishes_the_api_server_on_the_guest_link():
    t = vm.kind_tuning("ipvsg-ipvs", 1)
    assert t["networking"]["apiServerAddress"] == "10.253.0.2"
    assert 16443 <= t["networking"]["apiServerPort"] < 17443
    assert t == vm.kind_tuning("ipvsg-ipvs", 1)  # stable per name
    assert 'leader-elect: "false"' in t["kubeadm_patches"][0]


def test_kind_tuning_untaints_the_control_plane_only_beside_one_worker():
    # kind untaints a 1-node cluster itself and fails if the taint is already gone ("taint
    # node-role.kubernetes.io/control-plane not found"); with 2 workers the shape is the host's.
    untainted = [p for p in vm.kind_tuning("x", 1)["kubeadm_patches"] if "taints: []" in p]
    assert len(untainted) == 1
    assert not [p for p in vm.kind_tuning("x", 0)["kubeadm_patches"] if "taints: []" in p]
    assert not [p for p in vm.kind_tuning("x", 2)["kubeadm_patches"] if "taints: []" in p]


def test_a_cluster_is_rebuilt_on_the_engine_its_marker_names(tmp_path, monkeypatch):
    from harness import config
    monkeypatch.setattr(config, "CACHE", tmp_path)
    assert runner_for("nobody").env == {} and runner_for("nobody").where == "host"
    (tmp_path / "clusters").mkdir()
    (tmp_path / "clusters" / "g.json").write_text('{"engine": "guest", "guest": "svc-harness-guest"}')
    r = runner_for("g")
    assert r.env["DOCKER_HOST"].endswith(f":{vm.DOCKER_PORT}") and r.where.startswith("guest")
    # markers written before engines had names (engine_env) still lead to the guest
    (tmp_path / "clusters" / "old.json").write_text('{"engine_env": {"DOCKER_HOST": "tcp://h:1"}}')
    assert runner_for("old").where.startswith("guest")


def test_mconsole_request_layout(tmp_path):
    import socket
    import threading
    path = str(tmp_path / "mc")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)

    def answer():
        data, addr = srv.recvfrom(1024)
        magic, version, n = struct.unpack("<III", data[:12])
        assert (magic, version) == (mconsole.MAGIC, mconsole.VERSION)
        text = data[12:12 + n]
        srv.sendto(struct.pack("<III", 0, 0, 3 + len(text)) + b"ok " + text, addr)
    t = threading.Thread(target=answer)
    t.start()
    assert mconsole.command(tmp_path / "mc", "cad") == "ok cad"
    t.join()
    srv.close()


def test_ping_outcomes_from_iputils_output():
    from harness.expectations import ping_outcome
    assert ping_outcome("64 bytes from 10.96.0.10: icmp_seq=1 ttl=64 time=0.1 ms") == "echo reply"
    assert ping_outcome("From 10.96.12.7 icmp_seq=1 Destination Port Unreachable\n") == "port unreachable"
    assert ping_outcome("From 172.18.0.1 icmp_seq=1 Destination Net Unreachable") == \
        "other ICMP error (Destination Net Unreachable)"
    assert ping_outcome("2 packets transmitted, 0 received, 100% packet loss") == "no answer"


def test_guest_build_keys_follow_their_inputs(monkeypatch, tmp_path):
    from harness import config
    from harness.guest import build
    v = config.versions()
    k, r = build.kernel_key(v), build.rootfs_key(v)
    assert k == build.kernel_key(dict(v)) and len(k) == 16
    assert build.kernel_key({**v, "GUEST_KERNEL_SOURCE_VERSION": "0-0"}) != k
    assert build.rootfs_key({**v, "GUEST_ROOTFS_PACKAGES": v["GUEST_ROOTFS_PACKAGES"] + ",curl"}) != r
    frag = tmp_path / "uml.config"
    frag.write_text(build.FRAGMENT.read_text() + "CONFIG_FOO=y\n")
    monkeypatch.setattr(build, "FRAGMENT", frag)
    assert build.kernel_key(v) != k
    # the kernel's options the guest cannot work without are all asked for in the fragment
    asked = build.FRAGMENT.read_text()
    assert all(f"{o}=y" in asked for o in build.REQUIRED if o != "CONFIG_MCONSOLE")
    # and the ones it must not have are not: hostfs would open the host's filesystem to the guest
    assert all(f"{o}=y" not in asked for o in build.FORBIDDEN)
    assert "# CONFIG_HOSTFS is not set" in asked


def test_the_guest_waits_for_its_control_plane_in_the_kubeadm_api_kind_writes():
    import yaml
    from harness.guest import vm
    old = [yaml.safe_load(p) for p in vm.kind_tuning("c", 1, "v1.34.4")["kubeadm_patches"]]
    new = [yaml.safe_load(p) for p in vm.kind_tuning("c", 1, "v1.37.2")["kubeadm_patches"]]
    assert old[0]["apiServer"]["timeoutForControlPlane"] == "20m0s"
    assert "apiServer" not in new[0]  # kubeadm 1.37 (v1beta4) refuses the field
    init = [p for p in new if p["kind"] == "InitConfiguration" and "timeouts" in p]
    assert init and init[0]["timeouts"]["controlPlaneComponentHealthCheck"] == "20m0s"
    assert init[0]["timeouts"]["kubernetesAPICall"] == "10m0s"  # kubeadm's own writes: 1 min by default


def test_an_idle_guest_is_halted_but_not_one_a_run_or_a_kept_cluster_holds(tmp_path, monkeypatch):
    from harness import config
    from harness.guest.engine import GuestEngine
    from harness.owners import Leases, Owner
    monkeypatch.setattr(config, "CACHE", tmp_path)
    halted = []
    guest = type("G", (), {"cfg": vm.GuestConfig(index=1), "running": lambda self: not halted,
                           "down": lambda self: halted.append("down"), "remove_link": lambda self: None,
                           "runner": lambda self: None})()
    eng = GuestEngine(runner=object(), guest=guest)
    eng.leases = Leases(tmp_path / "leases")
    (tmp_path / "clusters").mkdir()
    kept = tmp_path / "clusters" / "mine-g2.json"
    kept.write_text('{"engine": "guest", "guest": "%s", "index": 1}' % guest.cfg.name)
    (tmp_path / "clusters" / "host.json").write_text('{"engine": "host"}')
    assert not eng.halt_if_idle() and not halted          # a kept cluster is on it
    kept.unlink()
    eng.leases.add("run-1", Owner.of())
    assert not eng.halt_if_idle() and not halted          # a live run leases it
    eng.leases.remove("run-1")
    assert eng.halt_if_idle() and halted == ["down"]     # nobody: halted
    assert not eng.halt_if_idle() and halted == ["down"]  # not running: nothing to do


def test_a_cluster_attempt_that_failed_brings_the_engine_back_before_the_next(tmp_path, monkeypatch):
    """A guest whose kernel panicked during kind create is down: the second attempt must not go to
    an engine that is gone (CI, 2026-12-05: attempt 2 failed in 6 s on "no route to host")."""
    from harness import cluster, config
    from harness.cluster import KindCluster
    from harness.engine.base import HostEngine
    monkeypatch.setattr(config, "CACHE", tmp_path)
    creates = []

    def first_create_fails(argv):
        if argv[1:3] == ["create", "cluster"]:
            creates.append(argv)
            return len(creates) == 1
        return False

    fake = FakeRunner().on(first_create_fails, returncode=1, stderr="dial tcp 10.253.0.6:2376: no route to host")
    back = []
    kc = KindCluster(name="c", mode="ipvs", engine=HostEngine(fake), engine_back=lambda: back.append(len(creates)))
    deletes = []
    for step in ("_apply_engine_tuning", "_wait_system_ready", "_seal_dns", "_export_logs_on_failure"):
        monkeypatch.setattr(kc, step, lambda: None)
    # the first delete cannot reach the engine (so cannot tell whether the nodes are gone)
    monkeypatch.setattr(kc, "_kind_delete", lambda: deletes.append(len(back)) or len(deletes) > 1)
    monkeypatch.setattr(cluster, "Kube", lambda *a, **k: type("K", (), {"wait_api_ready": lambda self: None})())
    kc._create_with_retries()
    assert len(creates) == 2 and back == [1]  # brought back once, between the two attempts
    assert deletes == [0, 1]                  # and its half-made nodes deleted again once it answers


def test_the_console_of_a_boot_that_ended_in_a_panic_is_kept_before_the_next_boot(tmp_path, monkeypatch):
    g = vm.Guest(vm.GuestConfig(index=1))
    monkeypatch.setattr(g, "console_log", tmp_path / "svc-harness-guest-2.console.log")
    assert g._keep_panic_log() is None                      # no console yet
    g.console_log.write_text("guest-init: dockerd started\n")
    assert g._keep_panic_log() is None and g.console_log.exists()  # a clean boot: nothing to keep
    g.console_log.write_text("eth0: renamed\nKernel panic - not syncing: Segfault without recovery target\n")
    kept = g._keep_panic_log()
    assert kept and kept.name.startswith("svc-harness-guest-2.panic-") and "Segfault" in kept.read_text()
    assert not g.console_log.exists()


def test_each_guest_gets_host_cpus_of_its_own(monkeypatch):
    monkeypatch.setattr(vm.os, "sched_getaffinity", lambda pid: {0, 1})
    cpus = {i: vm.Guest(vm.GuestConfig(index=i)).host_cpus() for i in range(3)}
    assert cpus == {0: [0], 1: [1], 2: [0]}  # a third guest on a 2-CPU host shares the first one's
    monkeypatch.setattr(vm.os, "sched_getaffinity", lambda pid: {2, 5, 7, 9})
    assert vm.Guest(vm.GuestConfig(index=1, cpus=2)).host_cpus() == [7, 9]
