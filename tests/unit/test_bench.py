"""Unit tests for the pure parts of harness.bench and the data-plane counters in harness.modes."""
import json

import pytest

from harness import modes
from harness.bench import metrics, results, scale

METRICS = """\
# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram
kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.1"} 2
kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="1"} 6
kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="+Inf"} 8
kubeproxy_sync_proxy_rules_duration_seconds_sum 9.5
kubeproxy_sync_proxy_rules_duration_seconds_count 8
# TYPE kubeproxy_sync_proxy_rules_endpoint_changes_pending gauge
kubeproxy_sync_proxy_rules_endpoint_changes_pending 3
# TYPE kubeproxy_sync_proxy_rules_service_changes_pending gauge
kubeproxy_sync_proxy_rules_service_changes_pending 1
# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge
kubeproxy_sync_proxy_rules_last_timestamp_seconds 1.7e9
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 4.2e7
"""


def test_parse_metrics_text():
    snap = metrics.parse(METRICS, "n1", 10.0)
    h = snap.histograms[metrics.SYNC]
    assert (h.count, h.sum, h.buckets[0.1], h.buckets[float("inf")]) == (8, 9.5, 2, 8)
    assert snap.pending() == 4
    assert snap.gauges[metrics.CPU] == 12.5 and snap.gauges[metrics.RSS] == 4.2e7
    assert snap.gauges[metrics.LAST_SYNC] == 1.7e9


def test_histogram_quantile_interpolates_inside_the_bucket():
    h = metrics.Histogram({0.1: 2, 1.0: 6, float("inf"): 8}, 8, 9.5)
    assert h.quantile(0.25) == pytest.approx(0.1)          # rank 2: top of the first bucket
    assert h.quantile(0.5) == pytest.approx(0.1 + 0.9 * 2 / 4)
    assert h.quantile(0.99) == 1.0                         # in +Inf: the last finite edge
    assert metrics.Histogram().quantile(0.5) is None


def test_between_subtracts_snapshots():
    before = metrics.parse(METRICS, "n1", 10.0)
    after_text = METRICS.replace('le="1"} 6', 'le="1"} 9').replace('le="+Inf"} 8', 'le="+Inf"} 11') \
        .replace("_count 8", "_count 11").replace("_sum 9.5", "_sum 11.0").replace("12.5", "14.0")
    d = metrics.between(before, metrics.parse(after_text, "n1", 40.0))
    assert d["seconds"] == 30.0 and d["cpu_seconds"] == pytest.approx(1.5)
    assert d["sync_proxy_rules"]["count"] == 3
    assert d["sync_proxy_rules"]["mean_s"] == pytest.approx(0.5)
    assert 0.1 < d["sync_proxy_rules"]["p50_s"] <= 1.0


FRESH = """\
# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram
kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="+Inf"} %(syncs)d
kubeproxy_sync_proxy_rules_duration_seconds_sum %(sum)s
kubeproxy_sync_proxy_rules_duration_seconds_count %(syncs)d
# TYPE kubeproxy_sync_full_proxy_rules_duration_seconds histogram
kubeproxy_sync_full_proxy_rules_duration_seconds_bucket{le="+Inf"} %(full)d
kubeproxy_sync_full_proxy_rules_duration_seconds_sum 2.5
kubeproxy_sync_full_proxy_rules_duration_seconds_count %(full)d
# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge
kubeproxy_sync_proxy_rules_last_timestamp_seconds 1000.0
# TYPE process_start_time_seconds gauge
process_start_time_seconds 994.0
"""


def test_a_restarted_kube_proxys_first_sync_is_read_only_while_it_can_be_told_apart():
    def first(syncs, full, total="2.5", drop_full=False):
        text = FRESH % {"syncs": syncs, "full": full, "sum": total}
        if drop_full:  # ipvs: no full-sync histogram
            text = "\n".join(l for l in text.splitlines() if "full_proxy" not in l) + "\n"
        return metrics.first_sync(metrics.parse(text))
    assert first(0, 0) is None  # started, not synced yet
    assert first(1, 1) == {"syncs_seen": 1, "first_sync_s": 2.5, "start_to_synced_s": 6.0}
    # a partial sync came after the full one: the full-sync histogram still holds the first alone
    assert first(2, 1, "2.6") == {"syncs_seen": 2, "first_sync_s": 2.5, "start_to_synced_s": None}
    assert first(1, 0, drop_full=True)["first_sync_s"] == 2.5
    assert first(2, 0, "4.0", drop_full=True) == {"syncs_seen": 2, "first_sync_s": None, "start_to_synced_s": None}


def test_scrape_reads_kube_proxy_through_the_api_servers_pod_proxy():
    class Api:
        calls = []

        def connect_get_namespaced_pod_proxy_with_path(self, name, namespace, path, **kw):
            self.calls.append((name, namespace, path))
            return type("Resp", (), {"data": METRICS.encode()})()

    snap = metrics.scrape(Api(), "kind-worker", "kube-proxy-abcde", 1.0)
    assert Api.calls == [("kube-proxy-abcde:10249", "kube-system", "metrics")]
    assert snap.node == "kind-worker" and snap.pending() == 4


def test_dataplane_counters():
    save = "*nat\n:KUBE-SERVICES - [0:0]\n" \
           "-A KUBE-SERVICES -d 10.96.0.30/32 -p tcp -m comment --comment \"a\" -j KUBE-SVC-A\n" \
           "-A KUBE-SVC-A -j KUBE-SEP-1\n" \
           "-A KUBE-SERVICES -d 10.96.4.2/32 -p tcp -j KUBE-SVC-B\nCOMMIT\n"
    assert modes.count_iptables_rules(save) == 3
    assert modes.kube_services_positions(save) == {"10.96.0.30": 1, "10.96.4.2": 2}
    nft = json.dumps({"nftables": [{"metainfo": {}}, {"table": {}}, {"chain": {}}, {"rule": {}}, {"rule": {}},
                                   {"map": {"name": "service-ips", "elem": [[1, 2], [3, 4], [5, 6]]}},
                                   {"set": {"name": "cluster-ips", "elem": ["10.96.0.1"]}}]})
    assert modes.count_nft(nft) == (2, 4)
    ipvs = ("IP Virtual Server version 1.2.1\nProt LocalAddress:Port Scheduler Flags\n"
            "TCP  10.96.0.1:443 rr\n  -> 172.18.0.2:6443 Masq 1 0 0\nUDP  10.96.0.10:53 rr\n")
    assert modes.count_ipvs_services(ipvs) == 2


def test_percentiles_and_spread():
    assert results.pct([], 50) is None
    assert results.pct([3, 1, 2], 50) == 2
    assert results.pct([1, 2, 3, 4], 95) == pytest.approx(3.85)
    assert results.spread([2, None, 1, 5]) == {"min": 1, "median": 2, "max": 5}


def _step(size, prog, pod, late, sync_p50):
    view = {"node": "w", "sync_proxy_rules": {"p50_s": sync_p50, "p95_s": sync_p50 * 2, "mean_s": sync_p50,
                                               "count": 4}, "network_programming": {"p50_s": 1.0, "p95_s": 2.0},
            "rss_bytes": 50 * 2**20, "cpu_seconds": 1.0}
    return {"size": size, "created": size, "create_rate_per_s": 100.0, "settled_after_s": 3.0,
            "client_node": "w", "dataplane": {"iptables_rules": size * 10},
            "programming": [{"latency_s": x} for x in prog],
            "first_packet": {"targets": [
                {"group": "pod", "latency_ms": pod, "failures": {}, "connect_us": [x * 40 for x in pod] * 5},
                {"group": "early", "latency_ms": pod, "failures": {}, "connect_us": [x * 40 for x in pod] * 5},
                {"group": "late", "latency_ms": late, "failures": {"timeout": 1}, "connect_us": [x * 40 for x in late] * 5}]},
            "probe_kube_proxy": [view], "bulk_kube_proxy": [view],
            "restart": {"first_sync_s": sync_p50 * 10, "start_to_synced_s": 3.0, "delete_to_synced_s": 9.0}}


def _data():
    def mode(name, factor):
        return {"mode": name, "repeats": [
            {"steps": [_step(100, [1.0, 2.0], [1.0, 1.0], [1.5, 1.5], 0.1),
                       _step(1000, [2.0 * factor, 4.0 * factor, None], [1.0], [1.0 + factor], 0.2 * factor)]},
            {"steps": [_step(100, [3.0], [1.0], [1.5], 0.1),
                       _step(1000, [6.0 * factor], [1.0], [1.0 + factor], 0.4 * factor)]}],
            "resolution": resolution}
    resolution = {"pod_ip": "10.244.1.2", "n": 100, "slow_rules": 10000, "failures": {},
                  "first": {"p50": {"value": 40.0, "low": 39.0, "high": 41.0}, "p99": None},
                  "second": {"p50": {"value": 41.0, "low": 40.0, "high": 42.0}},
                  "back_to_back_p50_diff_us": 1.0, "base": {"p50": {"value": 40.5, "low": 40.0, "high": 41.0}},
                  "slowed": {"p50": {"value": 240.0, "low": 230.0, "high": 250.0}},
                  "slowed_p50_shift_us": 199.5, "detected": True}
    return {"machine": {"cpus": 2, "cpu_model": "x", "memory_mib": 24000, "kernel": "6.1", "kubernetes": "v1.34.4"},
            "options": scale.Options(modes=["iptables", "nftables"], sizes=[100, 1000], repeats=2, probes=2,
                                     fp_requests=1, fp_services=1).record(), "seconds": 600, "modes": [mode("iptables", 2.0), mode("nftables", 1.0)]}


def test_summary_pools_repeats_and_counts_failures():
    rows = results.summarise(_data())
    ipt = next(r for r in rows if r["mode"] == "iptables" and r["size"] == 1000)
    assert ipt["programming_n"] == 3 and ipt["programming_failed"] == 1
    assert ipt["programming_p50_s"] == 8.0 and ipt["programming_max_s"] == 12.0
    assert ipt["programming_p50_spread_s"] == {"min": 6.0, "median": 9.0, "max": 12.0}
    assert ipt["fp_late_minus_pod_p50_ms"] == 2.0 and ipt["fp_failed"] == 2
    assert ipt["sync_p50_s"]["median"] == pytest.approx(0.6)
    # microseconds: late (1 + 2) * 40 = 120 us against the pod's 40 us, every sample identical
    assert ipt["fpc_late"]["p50"] == {"value": 120.0, "low": 120.0, "high": 120.0}
    assert ipt["fpc_late_minus_pod_p50_us"] == 80.0 and ipt["fpc_pod"]["n"] == 10
    # each repeat's own p50 (here alike: 120 us in both)
    assert ipt["fpc_late_p50_per_repeat_us"] == {"min": 120.0, "median": 120.0, "max": 120.0}


def test_ratios_compare_modes_of_one_run():
    rat = {r["size"]: r for r in results.ratios(results.summarise(_data()))}
    assert rat[100]["programming_p50"] == 1.0
    assert rat[1000]["programming_p50"] == 2.0 and rat[1000]["fp_late_p50_diff_ms"] == 1.0
    assert rat[1000]["restart_first_sync"] == pytest.approx(2.0)  # first syncs 6.0 (4.0–8.0) against 3.0


def test_report_redraws_the_table_and_leaves_the_raw_file_as_it_was(tmp_path):
    from harness.bench.__main__ import main
    js = tmp_path / "results.json"
    js.write_text(json.dumps(_data(), separators=(",", ":")))  # stored compact, as in docs/bench
    before = js.read_bytes()
    assert main(["report", str(js)]) == 0
    assert js.read_bytes() == before and "| iptables | 1000 |" in (tmp_path / "results.md").read_text()


def test_write_makes_table_and_charts(tmp_path):
    md, js = results.write(_data(), tmp_path)
    text = md.read_text()
    assert "| iptables | 1000 | 8.00 / " in text and "iptables ÷ nftables" in text
    assert "| iptables | 1000 | 40.0 [40.0–40.0] | 40.0 (40.0–40.0) |" in text and "+80.0 |" in text
    assert "| 120.0 [120.0–120.0] | 120.0 (120.0–120.0) |" in text
    assert "10000 non-matching rules" in text and "**seen**" in text and "19.9 ns per rule" in text
    assert "| iptables | 1000 | 6.000 (4.000–8.000) | 3.00 (3.00–3.00) | 9.00 (9.00–9.00) |" in text
    for png in ("programming-latency.png", "first-packet-latency.png", "first-packet-us.png", "sync-duration.png",
                "dataplane-size.png", "restart-sync.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG" and f"]({png})" in text
    assert json.loads(js.read_text())["modes"][0]["mode"] == "iptables"
    assert "ipvs ÷ nftables" not in text and "Engines: iptables on the host engine;" in text


def test_placement_says_whether_the_backends_share_the_clients_node():
    data = _data()
    assert results.placement_lines(data) == []  # runs from before it was recorded
    data["modes"][0]["placement"] = {"client": "w", "backends": {"a": {"node": "w", "ip": "1"},
                                                                "b": {"node": "w", "ip": "2"}}}
    data["modes"][1]["placement"] = {"client": "w", "backends": {"a": {"node": "w2", "ip": "1"},
                                                                "b": {"node": "w", "ip": "2"}}}
    assert results.placement_lines(data)[0] == ("Placement: iptables: client on w, 2 backends on the client's "
                                                "node; nftables: client on w, 2 backends on w, w2.")


def test_an_ipvs_series_is_set_beside_nftables_and_each_engine_named(tmp_path):
    data = _data()
    ipvs = json.loads(json.dumps(data["modes"][0]))
    data["modes"].append({**ipvs, "mode": "ipvs", "engine": "guest svc-harness-guest (UML, 7.2.13)"})
    data["options"]["all_in_guest"] = True
    text = results.write(data, tmp_path)[0].read_text()
    assert "## ipvs ÷ nftables, same run" in text and "## iptables ÷ nftables, same run" in text
    assert "ipvs on guest svc-harness-guest (UML, 7.2.13) (the three modes on one kernel" in text


def test_error_bars_span_the_repeats_and_only_with_repeats():
    rows = results.summarise(_data())
    ipt = [r for r in rows if r["mode"] == "iptables"]
    ys = [r["programming_p50_s"] for r in ipt]
    below, above = results.error_bars(ipt, ys, "programming_p50_spread_s")
    # size 1000: pooled p50 8.0, the two repeats' p50s 6.0 and 12.0
    assert (below[1], above[1]) == (2.0, 4.0)
    one = [{**r, "repeats": 1} for r in ipt]
    assert results.error_bars(one, ys, "programming_p50_spread_s") is None


def test_a_percentile_interval_holds_the_value_and_narrows_with_more_samples():
    import random
    from harness import stats
    rng = random.Random(1)
    few = [rng.gauss(50, 10) for _ in range(50)]
    many = few + [rng.gauss(50, 10) for _ in range(1950)]
    a, b = stats.percentile_ci(few, 50), stats.percentile_ci(many, 50)
    assert a["low"] <= a["value"] <= a["high"] and b["low"] <= b["value"] <= b["high"]
    assert b["high"] - b["low"] < (a["high"] - a["low"]) / 2
    assert stats.percentile_ci(many, 50) == b            # seeded: the same run redraws the same bars
    assert stats.percentile_ci([], 50) is None and stats.percentile_ci([7.0], 99)["low"] == 7.0


def test_connect_timings_are_parsed_and_failures_counted():
    from harness.bench import firstpacket
    from harness.probe import read_records
    out = "\n".join(['{"i":0,"kind":"ok","connect_us":41.5,"first_byte_us":180.0,"error":""}',
                     '{"i":1,"kind":"refused","connect_us":0,"error":"connection refused"}',
                     '{"i":2,"kind":"ok","connect_us":39.0,"error":""}', "svc-probe: noise", '{"end":3}'])
    t = firstpacket.Timings.from_records("10.96.0.10:80", read_records(out))
    assert t.connect_us == [41.5, 39.0] and t.first_byte_us == [180.0] and t.failures == {"refused": 1}
    argv = firstpacket.probe_argv("10.96.0.10", 80, 500)
    assert argv[:3] == ["svc-probe", "-connect", "10.96.0.10:80"] and "500" in argv


def test_the_slowed_path_script_writes_exactly_the_rules_asked_for():
    import subprocess
    from harness.bench import firstpacket
    script = firstpacket.slow_rules_script(300).replace("iptables-restore --noflush", "cat")
    lines = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    rules = [l for l in lines if l.startswith(f"-A {firstpacket.SLOW_CHAIN} ")]
    assert len(rules) == 300 and all(" -s 192.0.2." in l and l.endswith("-j RETURN") for l in rules)
    assert lines[0] == "*nat" and lines[-1] == "COMMIT"
    assert not any("PREROUTING" in l for l in lines)  # the jump comes and goes per round (slow_jump)


class _DriftingNode:
    """A node and its client pod in one: probe run k answers in 100 + drift(k) us, plus `cost_us`
    while the jump to the slowed path is in."""

    def __init__(self, cost_us, drift):
        self.cost_us, self.drift, self.runs, self.jump, self.chain = cost_us, drift, 0, False, False

    def describe(self):
        return "fake"

    def exec(self, argv, timeout=120, check=True):
        from types import SimpleNamespace
        out = ""
        if argv[0] == "svc-probe":
            self.runs += 1
            n = int(argv[argv.index("-n") + 1])
            at = 100.0 + self.drift(self.runs) + (self.cost_us if self.jump and self.chain else 0.0)
            out = "\n".join([*(f'{{"i":{i},"kind":"ok","connect_us":{at + (i % 7) - 3}}}' for i in range(n)),
                              f'{{"end":{n}}}'])
        elif argv[0] == "iptables":
            assert self.chain and self.jump != (argv[3] == "-I"), argv  # in only when out, out only when in
            self.jump = argv[3] == "-I"
        else:
            self.chain = "iptables-restore" in argv[-1]
            self.jump = self.jump and self.chain
        return SimpleNamespace(stdout=out, stderr="", rc=0)


@pytest.mark.parametrize("cost_us, drift, seen", [
    (20.0, lambda k: 5.0 * k, True),                 # a machine getting busier, slower than the cost
    (0.0, lambda k: 5.0 * k, False),                 # ... and no cost at all
    (20.0, lambda k: 40.0 if k > 7 else 0.0, True),  # a 40 us step inside the third round
    (0.0, lambda k: 40.0 if k > 7 else 0.0, False),
])
def test_the_slowed_path_is_told_apart_from_a_machine_that_drifts(cost_us, drift, seen):
    from harness.bench import firstpacket
    box = _DriftingNode(cost_us, drift)
    res = firstpacket.resolution(box, box, "10.244.1.2", 80, n=400, rules=10000)
    assert res["detected"] is seen and res["rounds"] == len(res["round_shifts_us"]) == firstpacket.ROUNDS
    assert res["round_n"] == 400 // firstpacket.ROUNDS and box.runs == 2 + 2 * firstpacket.ROUNDS
    assert not box.jump and not box.chain  # nothing left on the node
    line = results.slowed_rounds_text(res)
    assert ("**seen**" in line) is seen and f"of {firstpacket.ROUNDS} alternating rounds" in line


def test_rounds_alternate_which_side_goes_first():
    from harness.bench import firstpacket
    assert firstpacket.round_order(3) == [(0, False), (0, True), (1, True), (1, False), (2, False), (2, True)]


def test_a_kube_proxy_that_synced_the_last_change_counts_as_synced():
    snap = metrics.Snapshot("n", 0.0, {}, {metrics.LAST_SYNC: 105.5, metrics.LAST_QUEUED: 105.2})
    assert metrics.synced_since(snap, complete=106.0, written=105.0)      # synced it before we looked
    assert not metrics.synced_since(snap, complete=106.0, written=106.0)  # the last write came later
    assert metrics.synced_since(snap, complete=105.0, written=106.0)      # a sync after complete
    late = metrics.Snapshot("n", 0.0, {}, {metrics.LAST_SYNC: 105.0, metrics.LAST_QUEUED: 105.2})
    assert not metrics.synced_since(late, complete=106.0, written=105.0)  # queued, not synced yet


def test_first_packet_timings_wait_for_a_quiet_machine_and_flag_a_loud_one(monkeypatch):
    from harness.bench import scale
    bench = scale.ScaleBench.__new__(scale.ScaleBench)  # no cluster needed for the gate
    bench.opts = scale.Options(modes=["iptables"], sizes=[20], max_load=2.0, quiet_wait_s=0.3)
    loads = iter([5.0, 1.5, 1.5])
    monkeypatch.setattr(scale, "loadavg", lambda: next(loads))
    gate = bench.wait_quiet()
    assert gate["quiet"] is True and gate["load"] == 1.5 and gate["max_load"] == 2.0
    monkeypatch.setattr(scale, "loadavg", lambda: 9.0)
    gate = bench.wait_quiet()
    assert gate["quiet"] is False and gate["load"] == 9.0
    bench.opts = scale.Options(modes=["iptables"], sizes=[20])
    assert bench.wait_quiet() is None


def test_settling_to_no_services_needs_a_sync_after_the_last_listing_that_had_a_slice(monkeypatch):
    bench = object.__new__(scale.ScaleBench)
    bench.slices_written, bench._slices_seen_at = 0.0, 0.0
    one = {"metadata": {"labels": {"kubernetes.io/service-name": "s1"},
                        "managedFields": [{"time": "2026-12-04T20:00:00Z"}]},
           "endpoints": [{"conditions": {"ready": True}}]}
    listings = iter([[one], []])
    bench._raw = lambda method, *a, **kw: {"items": next(listings)}
    clock = iter([1000.0, 1002.0])
    monkeypatch.setattr(scale.time, "time", lambda: next(clock))
    assert bench.ready_slices() == 1 and bench.slices_written == scale._epoch("2026-12-04T20:00:00Z")
    assert bench.ready_slices() == 0 and bench.slices_written == 1000.0  # the deletion came after it
    snap = metrics.parse(METRICS.replace("1.7e9", "1001.5"), "n1", 1003.0)
    snap.gauges[metrics.LAST_QUEUED] = 1001.0  # kube-proxy saw a change after that listing, and synced it
    assert metrics.synced_since(snap, complete=1002.0, written=bench.slices_written)
    snap.gauges[metrics.LAST_QUEUED] = 999.0   # its last change predates the last deletion
    assert not metrics.synced_since(snap, complete=1002.0, written=bench.slices_written)


def test_a_benchmark_can_take_a_guest_of_its_own():
    from harness.bench.__main__ import parser
    args = parser().parse_args(["scale", "--proxy-mode=ipvs", "--guest=1"])
    opts = scale.Options(modes=args.proxy_mode, sizes=args.services, guest=args.guest, all_in_guest=True)
    eng = opts.engine_for("iptables")
    assert (eng.guest.cfg.name, eng.cluster_suffix) == ("svc-harness-guest-2", "-g2")
    assert eng.guest.cfg.mem != scale.Options(modes=["ipvs"], sizes=[1], all_in_guest=True).engine_for("ipvs").guest.cfg.mem
    with pytest.raises(SystemExit):
        parser().parse_args(["scale", "--guest=8"])


def test_a_restart_whose_first_sync_never_ended_is_a_lower_bound_not_a_lost_run(tmp_path):
    data = _data()
    data["modes"][0]["repeats"][1]["steps"][1]["restart"] = {"pod": "kube-proxy-x", "unfinished_after_s": 1800.4}
    text = results.write(data, tmp_path)[0].read_text()
    assert "| iptables | 1000 | 4.000 (4.000–4.000) | 3.00 (3.00–3.00) | 9.00 (9.00–9.00); unfinished after 1800 |" in text


def test_a_data_plane_count_that_times_out_is_recorded_not_fatal():
    from types import SimpleNamespace
    from harness.runner import CommandError, Result

    class SlowNode:
        def exec(self, argv, timeout=120, **kw):
            assert timeout == 300.0  # 30 000 Services: 0.01 s each
            raise CommandError(Result(argv, 124, "", "(timed out after 300s)", 300.1), "exec on node w")

    bench = SimpleNamespace(client_node=SlowNode(), mode="nftables")
    seen = scale.ScaleBench.dataplane(bench, 30000)
    assert "exit 124" in seen["error"]
    assert results._rules(seen) == "not counted (timed out)"


def test_first_packet_spread_between_repeats_is_each_repeats_own_p50(tmp_path):
    data = _data()
    late = next(t for t in data["modes"][0]["repeats"][1]["steps"][1]["first_packet"]["targets"] if t["group"] == "late")
    late["connect_us"] = [x * 2 for x in late["connect_us"]]  # the second repeat's late Services twice as slow
    ipt = next(r for r in results.summarise(data) if r["mode"] == "iptables" and r["size"] == 1000)
    assert ipt["fpc_late_p50_per_repeat_us"] == {"min": 120.0, "median": 180.0, "max": 240.0}
    assert ipt["fpc_pod_p50_per_repeat_us"]["max"] == 40.0
    text = results.write(data, tmp_path)[0].read_text()
    assert "| 180.0 (120.0–240.0) |" in text
    assert ipt["fpc_late_p50_repeats_us"] == [120.0, 240.0]  # in repeat order, for growth within a repeat
    from harness.bench import published
    pts = {p.size: p for p in published.points([("r", data)]) if p.mode == "iptables"}
    assert published.paired_growth(pts[100], pts[1000]) == [120.0 - 60.0, 240.0 - 60.0]


def test_the_posts_chart_is_set_beside_each_run_and_growth_is_judged_within_a_run(tmp_path):
    from harness.bench import published
    data = _data()  # late Services 80 us above the pod at 100, (1 + factor) * 40 at 1000
    for m in data["modes"]:
        for r in m["repeats"]:
            for st in r["steps"]:
                st["size"] = {100: 5000, 1000: 30000}[st["size"]]
    pts = published.points([("run-a", data)])
    assert {(p.mode, p.size) for p in pts} == {(m, s) for m in ("iptables", "nftables") for s in (5000, 30000)}
    cmp = {c["mode"]: c for c in published.comparisons(pts)}
    # iptables: 60 us at 5000 -> 120 us at 30000 (+60 against the post's +225); nftables 60 -> 80
    assert cmp["iptables"]["ours_us"] == 60.0 and cmp["iptables"]["post_us"] == 225
    assert cmp["iptables"]["verdict"] == "grows" and cmp["iptables"]["holds"] is True
    assert cmp["nftables"]["verdict"] == "grows" and cmp["nftables"]["holds"] is False
    md = published.write([("run-a", data)], tmp_path).read_text()
    assert ("| run-a | iptables | 5000 → 30000 | +225 | +60.0 | +60.0 (+60.0–+60.0), up in 2 of 2 | 0.27 | grows "
            "| grows: holds |") in md
    assert "does not grow: **does not hold**" in md
    # iptables 120 us against nftables' 80 us at 30000 (the post: 274 - 14), alike at 5000
    gap = {g["size"]: g for g in published.gaps(pts)}
    assert gap[30000]["ours_us"] == 40.0 and gap[30000]["post_us"] == 260 and gap[30000]["nftables_faster"]
    assert gap[5000]["ours_us"] == 0.0 and not gap[5000]["nftables_faster"]
    assert "| run-a | 30000 | +260 | +40.0 | +40.0 (+40.0–+40.0) | yes |" in md
    assert (tmp_path / "published-first-packet.png").read_bytes()[:4] == b"\x89PNG"
    small = published.comparisons(published.points([("run-b", _data())]))  # 100 -> 1000 Services
    assert small and all(c["claim"] is None and c["holds"] is None for c in small)


def test_growth_is_flat_when_the_repeats_overlap_even_if_the_pooled_intervals_do_not():
    import dataclasses
    from harness.bench.published import Point, growth_verdict
    ci = lambda v: {"value": v, "low": v - 1, "high": v + 1}  # noqa: E731
    low = Point("r", "iptables", 5000, ci(100), None, {"min": 90, "median": 100, "max": 130}, 5)
    high = Point("r", "iptables", 10000, ci(110), None, {"min": 95, "median": 110, "max": 125}, 5)
    assert growth_verdict(low, high) == "flat"
    # one repeat each: only the pooled intervals, which are apart
    assert growth_verdict(dataclasses.replace(low, per_repeat=None), high) == "grows"
    assert growth_verdict(high, Point("r", "iptables", 30000, ci(50), None, None, 1)) == "shrinks"


def test_published_refuses_runs_without_microsecond_timings(tmp_path, capsys):
    from harness.bench.__main__ import main
    old = tmp_path / "old" / "results.json"
    old.parent.mkdir()
    data = _data()
    for m in data["modes"]:
        for r in m["repeats"]:
            for st in r["steps"]:
                for t in st["first_packet"]["targets"]:
                    t.pop("connect_us")
    old.write_text(json.dumps(data))
    with pytest.raises(SystemExit):
        main(["published", str(old), "--out", str(tmp_path)])
    assert "runs before 2026-12-03 lack them" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["published", str(tmp_path / "missing.json"), "--out", str(tmp_path)])


def test_a_long_bulk_creation_says_how_far_it_got(monkeypatch, caplog):
    import logging
    from types import SimpleNamespace
    created = []

    from harness import waits
    slowdowns = set()

    class Api:
        def create_namespaced_service(self, ns, body, _preload_content=True):
            created.append(body["metadata"]["name"])
            slowdowns.add(waits.slowdown())
            return SimpleNamespace(status=201, release_conn=lambda: None)

    monkeypatch.setattr(scale, "PROGRESS_EVERY_S", 0)  # a line per Service, but the last
    monkeypatch.setattr(scale, "_done", lambda r: r)
    bench = SimpleNamespace(api=Api(), mode="nftables", opts=SimpleNamespace(create_workers=2),
                            lab=SimpleNamespace(step=lambda title: None),
                            cluster=SimpleNamespace(kube=SimpleNamespace(wait_api_ready=lambda: None)),
                            _body=lambda name, kind, ip="": {"metadata": {"name": name}})
    bench._create = lambda name, kind, ip="": scale.ScaleBench._create(bench, name, kind, ip)
    bench._in_parallel = lambda *a: scale.ScaleBench._in_parallel(bench, *a)
    with caplog.at_level(logging.INFO, logger="harness.progress"), waits.slower(3):
        names, _ = scale.ScaleBench.create_bulk(bench, 7, 3)
    assert names == ["s00007", "s00008", "s00009"] and sorted(created) == names
    assert slowdowns == {3 * waits.config.slowdown()}  # the pool's threads wait as slowly as the engine
    lines = [r.getMessage() for r in caplog.records if r.name == "harness.progress"]
    assert [line.split(" (")[0] for line in lines] == ["nftables: 1 of 3 Services created",
                                                       "nftables: 2 of 3 Services created"]


def test_syncs_around_one_change_are_counted_with_the_time_since_the_previous_one():
    def snap(syncs, last):
        return metrics.Snapshot("w", 0.0, {metrics.SYNC: metrics.Histogram({}, syncs, 0.0)},
                                {metrics.LAST_SYNC: last})
    two = metrics.around_change(snap(8, 100.0), snap(10, 103.4), changed=102.5, answered=103.5)
    assert two == {"syncs": 2, "since_last_sync_s": 2.5, "synced_after_answer": False}
    # a sync ended after the answer: the count is an upper bound, and said so
    assert metrics.around_change(snap(8, 100.0), snap(9, 104.0), 100.4, 103.5)["synced_after_answer"] is True
    # no answer, or a kube-proxy that never synced: nothing made up
    fresh = metrics.around_change(snap(0, 0.0), snap(1, 5.0), 1.0, None)
    assert fresh == {"syncs": 1, "since_last_sync_s": None, "synced_after_answer": False}


def test_programming_samples_are_grouped_by_the_syncs_they_took(tmp_path):
    data = _data()
    step = data["modes"][1]["repeats"][0]["steps"][1]
    step["programming"] = [
        {"latency_s": 1.3, "kube_proxy": {"syncs": 2, "since_last_sync_s": 1.6, "synced_after_answer": False}},
        {"latency_s": 1.4, "kube_proxy": {"syncs": 2, "since_last_sync_s": 1.2, "synced_after_answer": True}},
        {"latency_s": 0.5, "kube_proxy": {"syncs": 1, "since_last_sync_s": 0.4, "synced_after_answer": False}},
        {"latency_s": None, "kube_proxy": {"syncs": 0, "since_last_sync_s": 0.2, "synced_after_answer": False}}]
    row = next(r for r in results.summarise(data) if r["mode"] == "nftables" and r["size"] == 1000)
    assert row["programming_by_syncs"] == [
        {"syncs": 1, "n": 1, "p50_s": 0.5, "since_last_sync_s": {"min": 0.4, "median": 0.4, "max": 0.4},
         "synced_after_answer": 0},
        {"syncs": 2, "n": 2, "p50_s": pytest.approx(1.35),
         "since_last_sync_s": {"min": 1.2, "median": pytest.approx(1.4), "max": 1.6}, "synced_after_answer": 1}]
    text = results.write(data, tmp_path)[0].read_text()
    assert "| nftables | 1000 | 2 | 2 | 1.35 | 1.40 (1.20–1.60) | 1 |" in text
    # results written before the count existed have no such section
    assert "by kube-proxy syncs" not in results.write(_data(), tmp_path / "old")[0].read_text()


def test_failures_to_the_pod_ip_fail_the_run_except_in_ipvs_where_they_are_reported(tmp_path, monkeypatch, capsys):
    from harness.bench.__main__ import main
    data = _data()
    data["modes"][1]["mode"] = "ipvs"
    for m in data["modes"]:
        for r in m["repeats"]:
            for st in r["steps"]:
                st["programming"] = [p for p in st["programming"] if p["latency_s"] is not None]
                for t in st["first_packet"]["targets"]:
                    t["failures"] = {"connect timeout": 2} if t["group"] == "pod" else {}
    monkeypatch.setattr(scale, "run", lambda opts: data)
    assert main(["scale", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "FAILED iptables 1000: 0 new Service(s) never answered, 0 first-packet request(s) failed, 4 to the pod IP" in err
    assert "FAILED ipvs" not in err and "note: ipvs 1000: 4 connection(s) straight to the pod IP" in err
    assert "IPVS matches the reply" in err and "note: iptables" not in err
    assert "| ipvs | 1000 |" in (tmp_path / "results.md").read_text()
    assert "(4 to the pod IP failed)" in (tmp_path / "results.md").read_text()
    data["modes"] = data["modes"][1:]
    assert main(["scale", "--out", str(tmp_path)]) == 0
    data["modes"][0]["repeats"][0]["steps"][0]["first_packet"]["targets"][2]["failures"] = {"timeout": 1}
    assert main(["scale", "--out", str(tmp_path)]) == 1
    assert "FAILED ipvs 100: 0 new Service(s) never answered, 1 first-packet request(s) failed (late (?): timeout x1), 4 to the pod IP" in capsys.readouterr().err
    assert "(1 failed; 4 to the pod IP failed)" in (tmp_path / "results.md").read_text()
