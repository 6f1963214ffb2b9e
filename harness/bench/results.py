"""The scale benchmark's results: summary per mode and size, Markdown table, PNG charts.

Everything is computed from the raw samples in results.json, so
`python -m harness.bench report results.json` redraws the table and charts
from a saved run.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from ..stats import percentile as pct
from .firstpacket import summary

MODE_COLOURS = {"iptables": "tab:red", "nftables": "tab:blue", "ipvs": "tab:green"}


def spread(values: list[float]) -> dict | None:
    """min / median / max of per-repeat figures."""
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"min": min(v), "median": statistics.median(v), "max": max(v)}


def _client_view(views: list[dict], node: str) -> dict:
    return next((v for v in views if v.get("node") == node), views[0] if views else {})


def by_syncs(samples: list[dict]) -> list[dict]:
    """Programming samples grouped by how many kube-proxy syncs ended between the create and the
    answer (samples recorded with that count only): latency p50 and how long before the create the
    previous sync had ended."""
    groups: dict[int, list[dict]] = {}
    for p in samples:
        if p.get("kube_proxy") and p["latency_s"] is not None:
            groups.setdefault(p["kube_proxy"]["syncs"], []).append(p)
    return [{"syncs": k, "n": len(g), "p50_s": pct([p["latency_s"] for p in g], 50),
             "since_last_sync_s": spread([p["kube_proxy"]["since_last_sync_s"] for p in g]),
             "synced_after_answer": sum(p["kube_proxy"]["synced_after_answer"] for p in g)}
            for k, g in sorted(groups.items())]


def summarise(data: dict) -> list[dict]:
    """One row per (mode, size): pooled percentiles over all repeats, and per-repeat spreads."""
    rows = []
    for m in data["modes"]:
        sizes = sorted({st["size"] for r in m["repeats"] for st in r["steps"]})
        for size in sizes:
            steps = [st for r in m["repeats"] for st in r["steps"] if st["size"] == size]
            prog = [p["latency_s"] for st in steps for p in st["programming"] if p["latency_s"] is not None]
            prog_fail = sum(p["latency_s"] is None for st in steps for p in st["programming"])
            per_rep_p50 = [pct([p["latency_s"] for p in st["programming"] if p["latency_s"] is not None], 50)
                           for st in steps]

            def fp(group: str, st_list=steps) -> list[float]:
                return [x for st in st_list for t in st["first_packet"]["targets"] if t["group"] == group
                        for x in t["latency_ms"]]
            def fpc(group: str, st_list=steps) -> list[float]:
                return [x for st in st_list for t in st["first_packet"]["targets"] if t["group"] == group
                        for x in t.get("connect_us", [])]

            def fpc_per_repeat(group: str) -> list[float | None]:
                # each repeat's own p50, in repeat order: how far whole runs of the same point fall apart
                return [pct(fpc(group, [st]) or (fpc("early", [st]) if group == "late" else []), 50)
                        for st in steps]
            def fp_failures(services: bool) -> dict[str, int]:
                # "target (ip): kind" -> count, over the repeats
                out: dict[str, int] = {}
                for t in (t for st in steps for t in st["first_packet"]["targets"] if (t["group"] != "pod") == services):
                    for kind, n in t["failures"].items():
                        key = f"{t.get('target', t['group'])} ({t.get('ip', '?')}): {kind}"
                        out[key] = out.get(key, 0) + n
                return out
            svc_failures, pod_failures = fp_failures(services=True), fp_failures(services=False)
            c_pod, c_late = fpc("pod"), fpc("late") or fpc("early")
            late_per_repeat = fpc_per_repeat("late")
            pod, early, late = fp("pod"), fp("early"), fp("late")
            sync = [_client_view(st["probe_kube_proxy"], st["client_node"]).get("sync_proxy_rules", {})
                    for st in steps]
            netprog = [_client_view(st["probe_kube_proxy"], st["client_node"]).get("network_programming", {})
                       for st in steps]
            bulk = [_client_view(st["bulk_kube_proxy"], st["client_node"]) for st in steps]
            dp = steps[-1]["dataplane"]
            restarts = [st["restart"] for st in steps if st.get("restart")]
            rows.append({
                "mode": m["mode"], "size": size, "repeats": len(steps),
                "programming_n": len(prog), "programming_failed": prog_fail,
                "programming_p50_s": pct(prog, 50), "programming_p95_s": pct(prog, 95),
                "programming_max_s": max(prog) if prog else None,
                "programming_p50_spread_s": spread(per_rep_p50),
                "programming_by_syncs": by_syncs([p for st in steps for p in st["programming"]]),
                "fp_pod_p50_ms": pct(pod, 50), "fp_early_p50_ms": pct(early, 50),
                "fp_late_p50_ms": pct(late, 50), "fp_late_p95_ms": pct(late, 95),
                "fp_pod_p95_ms": pct(pod, 95), "fp_n": len(pod) + len(early) + len(late),
                # through the Services, and straight to the pod IP (the baseline; see results.POD_FAILURES)
                "fp_failed": sum(svc_failures.values()), "fp_pod_failed": sum(pod_failures.values()),
                "fp_failed_detail": svc_failures,
                "fp_late_minus_pod_p50_ms": (pct(late, 50) - pct(pod, 50)) if late and pod else None,
                "fp_late_minus_pod_spread_ms": spread([
                    (pct(fp("late", [st]), 50) - pct(fp("pod", [st]), 50)) if fp("late", [st]) else None
                    for st in steps]),
                # connect() to SYN-ACK, microseconds, pooled over repeats, with bootstrap intervals
                "fpc_pod": summary(c_pod), "fpc_late": summary(c_late), "fpc_early": summary(fpc("early")),
                "fpc_late_minus_pod_p50_us": (pct(c_late, 50) - pct(c_pod, 50)) if c_late and c_pod else None,
                "fpc_late_p50_repeats_us": late_per_repeat,
                "fpc_late_p50_per_repeat_us": spread(late_per_repeat),
                "fpc_pod_p50_per_repeat_us": spread(fpc_per_repeat("pod")),
                "sync_p50_s": spread([s.get("p50_s") for s in sync]),
                "sync_p95_s": spread([s.get("p95_s") for s in sync]),
                "sync_mean_s": spread([s.get("mean_s") for s in sync]),
                "sync_count": sum(s.get("count", 0) for s in sync),
                "netprog_p50_s": spread([s.get("p50_s") for s in netprog]),
                "netprog_p95_s": spread([s.get("p95_s") for s in netprog]),
                "bulk_sync_mean_s": spread([b.get("sync_proxy_rules", {}).get("mean_s") for b in bulk]),
                "bulk_cpu_s": spread([b.get("cpu_seconds") for b in bulk]),
                "rss_mib": spread([(_client_view(st["probe_kube_proxy"], st["client_node"]).get("rss_bytes") or 0)
                                   / 2**20 for st in steps]),
                "create_rate_per_s": spread([st["create_rate_per_s"] for st in steps if st["created"]]),
                "settled_after_s": spread([st["settled_after_s"] for st in steps]),
                "loadavg": spread([x for st in steps for x in (st.get("loadavg_start"), st.get("loadavg_end"))]),
                # --max-load: repeats whose first-packet timings were taken above it anyway
                "loud_repeats": sum(1 for st in steps if (st.get("load_gate") or {}).get("quiet") is False),
                "dataplane": dp,
                # kube-proxy restarted on the client's node with the size's Services in place
                "restart_first_sync_s": spread([x.get("first_sync_s") for x in restarts]),
                "restart_start_to_synced_s": spread([x.get("start_to_synced_s") for x in restarts]),
                "restart_delete_to_synced_s": spread([x.get("delete_to_synced_s") for x in restarts]),
                "restarts": len(restarts),
                # restarts whose first sync had not ended when the wait gave up: lower bounds
                "restart_unfinished_after_s": [x["unfinished_after_s"] for x in restarts if "unfinished_after_s" in x],
            })
    return rows


def ratios(rows: list[dict], num: str = "iptables", den: str = "nftables") -> list[dict]:
    """num/den per size for the headline figures (both from the same run and machine)."""
    by = {(r["mode"], r["size"]): r for r in rows}
    out = []
    for (mode, size), r in sorted(by.items(), key=lambda kv: kv[0][1]):
        if mode != num or (den, size) not in by:
            continue
        d = by[(den, size)]

        def ratio(key: str, sub: str | None = None):
            a, b = r[key], d[key]
            if sub:
                a, b = (a or {}).get(sub), (b or {}).get(sub)
            return a / b if a is not None and b else None
        out.append({"size": size, "programming_p50": ratio("programming_p50_s"),
                    "programming_p95": ratio("programming_p95_s"),
                    # an overhead near zero makes a ratio meaningless: the difference, in ms
                    "fp_late_p50_diff_ms": (r["fp_late_p50_ms"] - d["fp_late_p50_ms"])
                    if r["fp_late_p50_ms"] is not None and d["fp_late_p50_ms"] is not None else None,
                    "sync_p50": ratio("sync_p50_s", "median"), "sync_mean": ratio("sync_mean_s", "median"),
                    "restart_first_sync": ratio("restart_first_sync_s", "median")})
    return out


def ci_text(ci: dict | None, fmt: str = "{:.1f}") -> str:
    """value [low–high] of a firstpacket.percentile_ci result."""
    if not ci:
        return "–"
    return f"{fmt.format(ci['value'])} [{fmt.format(ci['low'])}–{fmt.format(ci['high'])}]"


def slowed_rounds_text(res: dict) -> str:
    """The slowed-path check in rounds (firstpacket.resolution)."""
    per_rule = (f"{res['slowed_p50_shift_us'] / res['slow_rules'] * 1000:.1f} ns per rule"
                if res["slowed_p50_shift_us"] is not None else "–")
    return (f"p50 higher in {res['rounds_up']} of {res['rounds']} alternating rounds ({res['round_n']} connections "
            f"a side; shifts {', '.join(number_text(x, '{:+.0f}') for x in res['round_shifts_us'])} µs; median "
            f"{number_text(res['slowed_p50_shift_us'], '{:+.1f}')} µs, {per_rule}): "
            + ("**seen**." if res["detected"] else "**NOT seen**: the probe cannot be trusted here."))


def _slowed_once_text(res: dict) -> str:
    """Results before 2026-12-05: one slowed sample against the two back-to-back ones."""
    return (f"p50 {ci_text(res['slowed']['p50'])} µs, {number_text(res['slowed_p50_shift_us'], '{:+.1f}')} µs "
            f"({number_text(res['slowed_p50_shift_us'] / res['slow_rules'] * 1000 if res['slowed_p50_shift_us'] is not None else None, '{:.1f}')}"
            f" ns per rule): " + ("**seen** (the intervals do not overlap)." if res["detected"]
                                 else "**NOT seen** (the intervals overlap): the probe cannot be trusted here."))


def placement_lines(data: dict) -> list[str]:
    """Where each mode's client and backends ran (recorded since 2026-12-06), as one paragraph."""
    parts = []
    for m in data["modes"]:
        pl = m.get("placement")
        if pl:
            nodes = sorted({b["node"] for b in pl["backends"].values()})
            same = "the client's node" if nodes == [pl["client"]] else ", ".join(nodes)
            parts.append(f"{m['mode']}: client on {pl['client']}, {len(pl['backends'])} backends on {same}")
    return ["Placement: " + "; ".join(parts) + ".", ""] if parts else []


def resolution_lines(data: dict) -> list[str]:
    """The probe's resolution per mode (firstpacket.resolution), as Markdown."""
    out = []
    for m in data["modes"]:
        res = m.get("resolution")
        if not res:
            continue
        line = (f"- **{m['mode']}**: to pod IP {res['pod_ip']}, {res['n']} connections per sample: p50 "
                f"{ci_text(res['first']['p50'])} µs, then {ci_text(res['second']['p50'])} µs back to back "
                f"(difference {number_text(res['back_to_back_p50_diff_us'], '{:.1f}')} µs; p99 "
                f"{ci_text(res['first']['p99'])} µs).")
        if res.get("slow_rules"):
            line += (f" With {res['slow_rules']} non-matching rules first in the client node's nat PREROUTING: "
                     + (slowed_rounds_text(res) if res.get("rounds") else _slowed_once_text(res)))
        if res.get("failures"):
            line += f" Failed connections: {res['failures']}."
        out.append(line)
    return out


# Why connections straight to a pod IP fail in ipvs mode and are not the benchmark's failure: IPVS
# keeps a closed Service connection (client port -> ClusterIP -> pod) in its table for a while and
# takes the pod's SYN-ACK to a new direct connection from the same client port for that one's.
POD_FAILURES = ("in ipvs mode, a connection to a pod from a client port that reached the same pod through a "
                "Service shortly before times out (IPVS matches the reply to the old connection; "
                "kubernetes/kubernetes#90042, #107249; docs/bench/README.md, 'Connections straight to a pod in ipvs mode')")


def _failed_text(r: dict) -> str:
    parts = ([f"{r['fp_failed']} failed"] if r["fp_failed"] else []) + (
        [f"{r['fp_pod_failed']} to the pod IP failed"] if r.get("fp_pod_failed") else [])
    return f" ({'; '.join(parts)})" if parts else ""


def number_text(x, fmt: str = "{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def spread_text(sp: dict | None, fmt: str = "{:.2f}", scale: float = 1.0) -> str:
    """median (min–max) of a spread."""
    if not sp:
        return "–"
    return (fmt.format(sp["median"] * scale) + " (" + fmt.format(sp["min"] * scale) + "–"
            + fmt.format(sp["max"] * scale) + ")")


def _rules(dp: dict) -> str:
    if "error" in dp:
        return "not counted (timed out)" if dp.get("timed_out") else "not counted (see results.json)"
    parts = [f"iptables {dp['iptables_rules']}"] if "iptables_rules" in dp else []
    if "nft_rules" in dp:
        parts.append(f"nft {dp['nft_rules']} rules + {dp['nft_elements']} map/set elements")
    if "ipvs_virtual_services" in dp:
        parts.append(f"ipvs {dp['ipvs_virtual_services']} virtual services")
    return ", ".join(parts)


def render_markdown(data: dict, charts: list[str]) -> str:
    rows = summarise(data)
    mc = data["machine"]
    o = data["options"]
    workers = o.get("worker_nodes", o.get("workers"))  # results written before 2026-12-03 say "workers"
    out = ["# Scale benchmark: Services per kube-proxy mode", "",
           f"Measured on this machine: {mc['cpus']} CPUs ({mc['cpu_model'] or 'unknown model'}), "
           f"{mc['memory_mib'] // 1024} GiB, kernel {mc['kernel']}, Kubernetes {mc['kubernetes']}, kind "
           f"(1 control plane + {workers} worker). Absolute figures are "
           "this machine's; compare modes through the ratios, which come from the same run.", "",
           "Engines: " + "; ".join(f"{m['mode']} on {m.get('engine', 'the host engine')}" for m in data["modes"])
           + (" (the three modes on one kernel, `--all-modes-in-guest`)" if o.get("all_in_guest") else "") + ".", "",
           *placement_lines(data),
           f"Sizes {o['sizes']}, {o['repeats']} repeat(s) each (the Services grown from zero again per "
           f"repeat); {o['probes']} programming samples per size and repeat; first packet: "
           f"{o['fp_requests']} requests to each of {o['fp_services']} early and late Services and to a pod "
           f"IP. Benchmark run time: {data.get('seconds', 0) / 60:.1f} min.", "",
           "Spreads are `median (min–max)` over repeats; p50/p95 pool every sample of every repeat. "
           f"Host load avg: the host's 1-minute load average at the start and end of each size "
           f"({mc['cpus']} CPUs).", "",
           "| mode | Services | programming p50 / p95 / max (s) | p50 per repeat | first packet p50: pod / early / "
           "late Service (ms) | late − pod (ms) | sync p50 / p95 (s) | network programming p50 (s) | "
           "create rate (/s) | rules on the client's node | kube-proxy RSS (MiB) | host load avg |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(
            f"| {r['mode']} | {r['size']} | {number_text(r['programming_p50_s'])} / {number_text(r['programming_p95_s'])} / "
            f"{number_text(r['programming_max_s'])} (n={r['programming_n']}"
            + (f", {r['programming_failed']} no answer" if r['programming_failed'] else "") + ") | "
            f"{spread_text(r['programming_p50_spread_s'])} | {number_text(r['fp_pod_p50_ms'])} / {number_text(r['fp_early_p50_ms'])} / "
            f"{number_text(r['fp_late_p50_ms'])}" + _failed_text(r) + " | "
            f"{spread_text(r['fp_late_minus_pod_spread_ms'])} | {spread_text(r['sync_p50_s'], '{:.3f}')} / "
            f"{spread_text(r['sync_p95_s'], '{:.3f}')} | {spread_text(r['netprog_p50_s'])} | {spread_text(r['create_rate_per_s'], '{:.0f}')} | "
            f"{_rules(r['dataplane'])} | {spread_text(r['rss_mib'], '{:.0f}')} | {spread_text(r['loadavg'], '{:.0f}')}"
            + (f" ({r['loud_repeats']} repeat(s) above --max-load)" if r.get("loud_repeats") else "") + " |")
    out += ["", "## First packet in microseconds: connect() until the SYN-ACK", "",
            f"{o.get('fp_connects', '–')} new connections per target, one after another, from the client pod "
            "(`svc-probe -connect`); pooled over repeats. Figures are `value [95 % bootstrap interval]` "
            "in µs; the per-repeat columns are each repeat's own p50 as `median (min–max)`, the spread "
            "between whole runs of the same point. Late Services are the last created of the size.", "",
            "| mode | Services | pod IP p50 | pod IP p50 per repeat | early Services p50 | late Services p50 | "
            "late Services p50 per repeat | late Services p99 | late − pod p50 |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['mode']} | {r['size']} | {ci_text(r['fpc_pod']['p50'])} | "
                   f"{spread_text(r['fpc_pod_p50_per_repeat_us'], '{:.1f}')} | {ci_text(r['fpc_early']['p50'])} | "
                   f"{ci_text(r['fpc_late']['p50'])} | {spread_text(r['fpc_late_p50_per_repeat_us'], '{:.1f}')} | "
                   f"{ci_text(r['fpc_late']['p99'])} | {number_text(r['fpc_late_minus_pod_p50_us'], '{:+.1f}')} |")
    if any(r["restarts"] for r in rows):
        out += ["", "## First sync after a kube-proxy restart", "",
                "kube-proxy's pod on the client's node deleted with every Service of the size in place; the "
                "DaemonSet starts a new one, which writes every rule from an empty memory. Figures are "
                "`median (min–max)` over repeats, in seconds.", "",
                "| mode | Services | first sync (its own histogram) | process start → first sync done | "
                "pod deleted → first sync seen |", "|---|---|---|---|---|"]
        for r in rows:
            if r["restarts"]:
                unfinished = "".join(f"; unfinished after {s:.0f}" for s in r["restart_unfinished_after_s"])
                out.append(f"| {r['mode']} | {r['size']} | {spread_text(r['restart_first_sync_s'], '{:.3f}')} | "
                           f"{spread_text(r['restart_start_to_synced_s'])} | {spread_text(r['restart_delete_to_synced_s'])}{unfinished} |")
    if any(r["programming_by_syncs"] for r in rows):
        out += ["", "## Programming latency by kube-proxy syncs", "",
                "The programming samples grouped by how many syncs kube-proxy on the client's node ended "
                "between the create call and the first answer (one: the Service and its EndpointSlice in "
                "one sync; two: the Service first, its endpoints in the next), with how long before the "
                "create its previous sync had ended, `median (min–max)`. Counts that also hold a sync "
                "ended after the answer are upper bounds, counted in the last column.", "",
                "| mode | Services | syncs until the answer | samples | programming p50 (s) | "
                "previous sync ended before the create (s) | upper bounds |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            for g in r["programming_by_syncs"]:
                out.append(f"| {r['mode']} | {r['size']} | {g['syncs']} | {g['n']} | {number_text(g['p50_s'])} | "
                           f"{spread_text(g['since_last_sync_s'])} | {g['synced_after_answer']} |")
    res = resolution_lines(data)
    if res:
        out += ["", "## The probe's resolution (measured on each cluster before it grew)", "", *res]
    # nftables is what upstream recommends moving to, from iptables and from the deprecated ipvs
    for num, den in (("iptables", "nftables"), ("ipvs", "nftables")):
        rat = ratios(rows, num, den)
        if not rat:
            continue
        out += ["", f"## {num} ÷ {den}, same run (first packet: {num} − {den})", "",
                "| Services | programming p50 | programming p95 | sync p50 | sync mean | first sync after a restart "
                "| first packet through late Services, p50 difference (ms) |", "|---|---|---|---|---|---|---|"]
        for r in rat:
            out.append(f"| {r['size']} | {number_text(r['programming_p50'])} | {number_text(r['programming_p95'])} | "
                       f"{number_text(r['sync_p50'])} | {number_text(r['sync_mean'])} | {number_text(r['restart_first_sync'])} | "
                       f"{number_text(r['fp_late_p50_diff_ms'], '{:+.2f}')} |")
    out += ["", "## How it was measured", "",
            "- **programming**: a client pod polls a ClusterIP chosen up front (a new connection every "
            "~0.1 s); the Service is then created with that ClusterIP; the latency runs from just before "
            "the create call to the poller's first HTTP answer (pod and host share one clock). It includes "
            "the API write, the EndpointSlice controller and kube-proxy's sync on the client's node.",
            "- **first packet**: `svc-probe` in the client pod, a new TCP connection per request, "
            "connect + HTTP answer; early = the first Services created, late = the last ones of the size "
            "(in iptables mode their rule position in KUBE-SERVICES is in results.json).",
            "- **sync / network programming**: kube-proxy's own histograms on the client's node, the "
            "difference across the programming samples of the size (bucket-interpolated percentiles).",
            "- **first sync after a restart**: kube-proxy's sync histogram of the new pod while it holds "
            "one sync (the full-sync histogram in iptables and nftables); process start → first sync done "
            "is its last-sync timestamp minus its process start time.",
            "- **rules**: `iptables-save` `-A` lines (all tables), `nft -j list table ip kube-proxy` rules "
            "and map/set elements, `ipvsadm -Ln` virtual services, after the size was synced.", ""]
    for c in charts:
        out.append(f"![{c}]({c})")
    return "\n".join(out) + "\n"


def charts(data: dict, out: Path) -> list[str]:
    """PNG charts, one line per mode against the number of Services; returns file names."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = summarise(data)
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    made = []

    def services_axis(ax) -> None:
        ax.set_ylim(bottom=0)  # from zero, so that a small difference does not look like a large one
        ax.set_xscale("log")
        ax.set_xticks(sorted({r["size"] for r in rows}))  # the measured sizes, as plain numbers
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("Services")

    def save(fig, ax, fname: str) -> None:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        made.append(fname)

    def line_chart(fname: str, title: str, ylabel: str, series: list[tuple]):
        """series: (row key, line style, label[, row key of its per-repeat spread for error bars])."""
        fig, ax = plt.subplots(figsize=(7, 4.2))
        with_bars = False
        for mode in modes:
            rs = [r for r in rows if r["mode"] == mode]
            xs = [r["size"] for r in rs]
            for key, style, label, *spread_key in series:
                ys = [r[key] for r in rs]
                if not any(y is not None for y in ys):
                    continue
                ys = [y if y is not None else float("nan") for y in ys]
                ax.plot(xs, ys, style, marker="o", color=MODE_COLOURS.get(mode), label=f"{mode} {label}".strip())
                bars = error_bars(rs, ys, spread_key[0]) if spread_key else None
                if bars:
                    ax.errorbar(xs, ys, yerr=bars, fmt="none", ecolor=MODE_COLOURS.get(mode), capsize=3,
                                alpha=0.7)
                    with_bars = True
        services_axis(ax)
        ax.set_ylabel(ylabel)
        ax.set_title(title + ("\n(bars: lowest to highest of the repeats)" if with_bars else ""))
        save(fig, ax, fname)

    def interval_chart():
        """First packet in µs (connect → SYN-ACK): p50 and p99 through late Services and p50 to the
        pod IP, each with its bootstrap interval as error bars."""
        if not any(r["fpc_late"]["n"] or r["fpc_pod"]["n"] for r in rows):
            return
        fig, ax = plt.subplots(figsize=(7, 4.2))
        banded = False
        for mode in modes:
            rs = [r for r in rows if r["mode"] == mode]
            for key, q, style, label in (("fpc_late", "p50", "-", "late Services p50"),
                                         ("fpc_late", "p99", "--", "late Services p99"),
                                         ("fpc_pod", "p50", ":", "pod IP p50")):
                pts = [(r["size"], r[key][q]) for r in rs if r[key][q]]
                if not pts:
                    continue
                xs, cis = [x for x, _ in pts], [c for _, c in pts]
                ys = [c["value"] for c in cis]
                ax.errorbar(xs, ys, yerr=[[y - c["low"] for y, c in zip(ys, cis)],
                                          [c["high"] - y for y, c in zip(ys, cis)]],
                            fmt=style, marker="o", capsize=3, color=MODE_COLOURS.get(mode), label=f"{mode} {label}")
            band = [(r["size"], r["fpc_late_p50_per_repeat_us"]) for r in rs
                    if r["repeats"] > 1 and r["fpc_late_p50_per_repeat_us"]]
            if band:
                banded = True
                ax.fill_between([x for x, _ in band], [b["min"] for _, b in band], [b["max"] for _, b in band],
                                color=MODE_COLOURS.get(mode), alpha=0.15, label=f"{mode} late p50, range of repeats")
        services_axis(ax)
        ax.set_ylabel("microseconds")
        ax.set_title("First packet: connect() until the SYN-ACK\n(bars: 95 % bootstrap intervals"
                     + ("; bands: lowest to highest repeat p50)" if banded else ")"))
        save(fig, ax, "first-packet-us.png")

    for r in rows:  # flatten the spreads the charts use
        r["sync_p50_med"] = (r["sync_p50_s"] or {}).get("median")
        r["sync_p95_med"] = (r["sync_p95_s"] or {}).get("median")
        r["rules"] = r["dataplane"].get("nft_rules", 0) + r["dataplane"].get("nft_elements", 0) \
            if r["mode"] == "nftables" else r["dataplane"].get("iptables_rules")
    line_chart("programming-latency.png", "Service programming latency (create → first answer)",
               "seconds", [("programming_p50_s", "-", "p50", "programming_p50_spread_s"),
                           ("programming_p95_s", "--", "p95")])
    line_chart("first-packet-latency.png", "First-packet latency: connect + first response",
               "milliseconds", [("fp_late_p50_ms", "-", "late Services p50"),
                                ("fp_early_p50_ms", ":", "early Services p50"),
                                ("fp_pod_p50_ms", "--", "pod IP direct p50")])
    interval_chart()
    line_chart("sync-duration.png", "kube-proxy sync_proxy_rules duration (client's node)", "seconds",
               [("sync_p50_med", "-", "p50", "sync_p50_s"), ("sync_p95_med", "--", "p95", "sync_p95_s")])
    for r in rows:
        r["restart_med"] = (r["restart_first_sync_s"] or {}).get("median")
    if any(r["restart_med"] is not None for r in rows):
        line_chart("restart-sync.png", "kube-proxy's first sync after a restart (client's node)", "seconds",
                   [("restart_med", "-", "first sync", "restart_first_sync_s")])
    line_chart("dataplane-size.png", "Data-plane size on the client's node", "rules (+ nft map elements)",
               [("rules", "-", "")])
    if by_position(data):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for size, pts in sorted(by_position(data).items()):
            ax.scatter([p for p, _ in pts], [d for _, d in pts], s=14, label=f"{size} Services")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlabel("position of the Service's rule in KUBE-SERVICES")
        ax.set_ylabel("p50 through the Service − p50 to the pod (ms)")
        ax.set_title("iptables: first-packet overhead against the rule's position")
        save(fig, ax, "first-packet-by-rule-position.png")
    return made


def error_bars(rows: list[dict], ys: list[float], spread_key: str) -> list[list[float]] | None:
    """matplotlib's yerr (below, above) from each row's per-repeat min..max around the plotted value;
    None unless some row had more than one repeat (one repeat has no spread to show)."""
    if not any(r["repeats"] > 1 and r.get(spread_key) for r in rows):
        return None
    below, above = [], []
    for r, y in zip(rows, ys):
        sp = r.get(spread_key) if r["repeats"] > 1 else None
        below.append(max(0.0, y - sp["min"]) if sp and y == y else 0.0)
        above.append(max(0.0, sp["max"] - y) if sp and y == y else 0.0)
    return [below, above]


def by_position(data: dict) -> dict[int, list[tuple[int, float]]]:
    """iptables: size -> [(KUBE-SERVICES position, p50 through that Service − p50 to the pod in ms)].

    Creation order says nothing about the chain order (kube-proxy writes the chain in its own
    order), so the position recorded at measurement time is what the first packet walks."""
    out: dict[int, list[tuple[int, float]]] = {}
    for m in data["modes"]:
        if m["mode"] != "iptables":
            continue
        for r in m["repeats"]:
            for st in r["steps"]:
                targets = st["first_packet"]["targets"]
                pod = pct([x for t in targets if t["group"] == "pod" for x in t["latency_ms"]], 50)
                for t in targets:
                    if t["group"] != "pod" and t.get("rule_position") and t["latency_ms"] and pod is not None:
                        out.setdefault(st["size"], []).append((t["rule_position"], pct(t["latency_ms"], 50) - pod))
    return out


def write(data: dict, out: Path) -> tuple[Path, Path]:
    """results.json (raw), results.md (table) and the charts into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    js = out / "results.json"
    js.write_text(json.dumps(data, indent=1) + "\n")
    return write_report(data, out), js


def write_report(data: dict, out: Path) -> Path:
    """results.md and the charts into `out`, from raw results (the raw file is left as it is)."""
    out.mkdir(parents=True, exist_ok=True)
    made = charts(data, out)
    md = out / "results.md"
    md.write_text(render_markdown(data, made))
    return md
