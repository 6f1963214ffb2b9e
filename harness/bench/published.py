"""The nftables post's first-packet chart as data, and our runs drawn and judged beside it.

The nftables post (kubernetes.io blog, 2025-02-28) and KEP-3866 show first-packet round-trip time
against the number of Services as a chart without numbers. The values below are read off that
chart (±5 µs). Our figure is connect() until the SYN-ACK through the late Services of a size
(harness.bench.firstpacket), which also holds the client pod's own connect path, so absolute values
differ; the claim is about growth, and growth is only compared within one run (one cluster), never
between runs.

    python -m harness.bench published RUN_A/results.json RUN_B/results.json --out DIR

writes DIR/published-first-packet.md and DIR/published-first-packet.png.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import results

SOURCE = "the nftables post (kubernetes.io blog, 2025-02-28) and KEP-3866, read off the chart (±5 µs)"
# mode -> Services -> (p50, p99), microseconds
POST_US: dict[str, dict[int, tuple[float, float]]] = {
    "iptables": {5000: (49, 156), 10000: (61, 262), 30000: (274, 715)},
    "nftables": {5000: (14, 37), 10000: (14, 37), 30000: (14, 37)},
}
# what the post claims for each mode as Services are added: the verdicts (growth_verdict) that agree
CLAIMS = {"iptables": ("grows", {"grows"}), "nftables": ("does not grow", {"flat", "shrinks"})}


@dataclass
class Point:
    """One run's late-Service first packet at one size (percentile_ci dicts, µs)."""
    run: str
    mode: str
    size: int
    p50: dict
    p99: dict | None
    per_repeat: dict | None  # each repeat's own p50, results.spread; None with one repeat
    repeats: int
    repeat_p50s: tuple = ()  # each repeat's own p50, in repeat order (a repeat grows every size anew)


def points(runs: list[tuple[str, dict]]) -> list[Point]:
    """Every (run, mode, size) with connect() timings through late Services."""
    out = []
    for label, data in runs:
        for r in results.summarise(data):
            if r["fpc_late"]["n"] and r["fpc_late"]["p50"]:
                out.append(Point(label, r["mode"], r["size"], r["fpc_late"]["p50"], r["fpc_late"]["p99"],
                                 r.get("fpc_late_p50_per_repeat_us") if r["repeats"] > 1 else None,
                                 r["repeats"], tuple(r.get("fpc_late_p50_repeats_us") or ())))
    return out


def growth_verdict(low: Point, high: Point) -> str:
    """'grows', 'shrinks' or 'flat' from `low` to `high` (same run, more Services at `high`): apart
    only when the bootstrap intervals do not overlap and, with repeats, neither do the ranges of the
    repeats' own p50s (the spread between whole runs is wider than a pooled interval)."""
    def apart(a: dict, b: dict) -> bool:
        return a["high"] < b["low"]
    a, b = low.p50, high.p50
    ra, rb = low.per_repeat, high.per_repeat
    if apart(a, b) and (not (ra and rb) or ra["max"] < rb["min"]):
        return "grows"
    if apart(b, a) and (not (ra and rb) or rb["max"] < ra["min"]):
        return "shrinks"
    return "flat"


def paired_growth(low: Point, high: Point) -> list[float]:
    """Growth within each repeat (the same repeat's two sizes), for runs with repeats."""
    pairs = list(zip(low.repeat_p50s, high.repeat_p50s))
    return [b - a for a, b in pairs if a is not None and b is not None] if len(pairs) > 1 else []


def comparisons(pts: list[Point]) -> list[dict]:
    """Within each run and mode: from its smallest size to every larger one, our growth beside the
    post's (where the post has both sizes) and whether the post's claim about the mode holds."""
    out = []
    for run in dict.fromkeys(p.run for p in pts):
        for mode in dict.fromkeys(p.mode for p in pts if p.run == run):
            mine = sorted((p for p in pts if p.run == run and p.mode == mode), key=lambda p: p.size)
            post = POST_US.get(mode, {})
            base = mine[0]
            for p in mine:
                if p.size <= base.size:
                    continue
                ours = p.p50["value"] - base.p50["value"]
                theirs = post[p.size][0] - post[base.size][0] if p.size in post and base.size in post else None
                verdict = growth_verdict(base, p)
                claim, agree = CLAIMS.get(mode, (None, set()))
                if not post or p.size < min(post):
                    claim = None  # below the post's sizes its chart says nothing, and the effect is tiny
                paired = paired_growth(base, p)
                out.append({"run": run, "mode": mode, "from": base.size, "to": p.size, "ours_us": ours,
                            "per_repeat_us": results.spread(paired), "repeats_up": sum(g > 0 for g in paired),
                            "repeats_paired": len(paired),
                            "post_us": theirs, "ratio": ours / theirs if theirs else None,
                            "verdict": verdict, "claim": claim, "holds": None if claim is None else verdict in agree})
    return out


def gaps(pts: list[Point]) -> list[dict]:
    """iptables − nftables at each size both were measured in the same run, beside the post's gap."""
    by = {(p.run, p.mode, p.size): p for p in pts}
    out = []
    for (run, mode, size), ipt in by.items():
        nft = by.get((run, "nftables", size))
        if mode != "iptables" or not nft:
            continue
        post = (POST_US["iptables"][size][0] - POST_US["nftables"][size][0]) if size in POST_US["iptables"] else None
        paired = [a - b for a, b in zip(ipt.repeat_p50s, nft.repeat_p50s) if a is not None and b is not None]
        out.append({"run": run, "size": size, "ours_us": ipt.p50["value"] - nft.p50["value"], "post_us": post,
                    "per_repeat_us": results.spread(paired) if len(paired) > 1 else None,
                    # the post: nftables is the faster; seen when the two intervals are apart
                    "nftables_faster": growth_verdict(nft, ipt) == "grows"})
    return sorted(out, key=lambda g: (g["run"], g["size"]))


def _ci(ci: dict | None) -> str:
    return results.ci_text(ci)


def _section(title: str, intro: str, columns: list[str]) -> list[str]:
    """A Markdown section's heading, its paragraph and its table's header rows."""
    return ["", f"## {title}", "", intro, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def render(pts: list[Point]) -> str:
    out = ["# First packet against the number of Services: the post's chart and ours", "",
           f"Published: {SOURCE}. Ours: connect() until the SYN-ACK through the late Services of the "
           "size, `value [95 % bootstrap interval]` in µs, pooled over a run's repeats; with repeats, "
           "each repeat's own p50 as `median (min–max)`. Absolute values are not comparable (ours hold "
           "the client pod's own connect path); growth is, and it is only taken within one run.", "",
           "| run | mode | Services | post p50 | ours p50 | ours p50 per repeat | post p99 | ours p99 | repeats |",
           "|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(pts, key=lambda p: (p.run, p.mode, p.size)):
        post = POST_US.get(p.mode, {}).get(p.size)
        out.append(f"| {p.run} | {p.mode} | {p.size} | {post[0] if post else '–'} | {_ci(p.p50)} | "
                   f"{results.spread_text(p.per_repeat, '{:.1f}') if p.per_repeat else '–'} | "
                   f"{post[1] if post else '–'} | {_ci(p.p99)} | {p.repeats} |")
    cmp = comparisons(pts)
    if cmp:
        out += _section("Growth within a run, beside the post's",
                        "p50 at the larger size minus p50 at the smaller one, µs. *Seen*: grows or shrinks when "
                        "the two intervals (and, with repeats, the two ranges of repeat p50s) do not overlap, "
                        "flat otherwise. The post's claims: iptables grows with the Services, nftables does not "
                        "(judged only where the larger size is within the post's, 5000 Services or more). "
                        "Per repeat: the growth within each repeat (both sizes measured in the same repeat), "
                        "`median (min–max)`, and in how many repeats it was positive.",
                        ["run", "mode", "Services", "post growth", "our growth", "per repeat", "ours ÷ post",
                         "seen", "the post's claim"])
        for c in cmp:
            holds = "–" if c["claim"] is None else f"{c['claim']}: " + ("holds" if c["holds"] else "**does not hold**")
            post = "–" if c["post_us"] is None else f"{c['post_us']:+.0f}"
            per = (f"{results.spread_text(c['per_repeat_us'], '{:+.1f}')}, up in {c['repeats_up']} of {c['repeats_paired']}"
                   if c["repeats_paired"] else "–")
            out.append(f"| {c['run']} | {c['mode']} | {c['from']} → {c['to']} | {post} | {c['ours_us']:+.1f} | "
                       f"{per} | {results.number_text(c['ratio'])} | {c['verdict']} | {holds} |")
    gap = gaps(pts)
    if gap:
        out += _section("iptables − nftables at one size, same run",
                        "p50 through late Services, µs; *nftables faster* when the two intervals (and, with "
                        "repeats, the two ranges of repeat p50s) are apart. Each repeat's modes ran on clusters "
                        "of their own, one after the other, so the per-repeat figure pairs repeat i of one mode "
                        "with repeat i of the other.",
                        ["run", "Services", "post gap", "our gap", "per repeat", "nftables faster"])
        for g in gap:
            post = "–" if g["post_us"] is None else f"{g['post_us']:+.0f}"
            out.append(f"| {g['run']} | {g['size']} | {post} | {g['ours_us']:+.1f} | "
                       f"{results.spread_text(g['per_repeat_us'], '{:+.1f}')} | "
                       f"{'yes' if g['nftables_faster'] else 'no'} |")
    return "\n".join(out) + "\n"


def chart(pts: list[Point], path: Path) -> None:
    """p50 and p99 against Services: the post's values (dashed, open markers) and each run's
    (solid, bootstrap bars; a band over the repeats' p50s where there were repeats)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    markers = "osD^v<>"
    runs = list(dict.fromkeys(p.run for p in pts))
    for ax, q, idx in ((axes[0], "p50", 0), (axes[1], "p99", 1)):
        for mode, sizes in POST_US.items():
            xs = sorted(sizes)
            ax.plot(xs, [sizes[x][idx] for x in xs], "--", marker="o", mfc="none",
                    color=results.MODE_COLOURS.get(mode), alpha=0.8, label=f"{mode}, the post")
        for i, run in enumerate(runs):
            for mode in dict.fromkeys(p.mode for p in pts if p.run == run):
                mine = sorted((p for p in pts if p.run == run and p.mode == mode and getattr(p, q)),
                              key=lambda p: p.size)
                if not mine:
                    continue
                xs, cis = [p.size for p in mine], [getattr(p, q) for p in mine]
                ys = [c["value"] for c in cis]
                ax.errorbar(xs, ys, yerr=[[y - c["low"] for y, c in zip(ys, cis)],
                                          [c["high"] - y for y, c in zip(ys, cis)]],
                            fmt="-", marker=markers[i % len(markers)], capsize=3,
                            color=results.MODE_COLOURS.get(mode), label=f"{mode}, {run}")
                band = [p for p in mine if p.per_repeat] if q == "p50" else []
                if len(band) > 1:
                    ax.fill_between([p.size for p in band], [p.per_repeat["min"] for p in band],
                                    [p.per_repeat["max"] for p in band], color=results.MODE_COLOURS.get(mode),
                                    alpha=0.15)
        ax.set_xscale("log")
        ax.set_xticks(sorted({p.size for p in pts} | {s for v in POST_US.values() for s in v}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_ylim(bottom=0)
        ax.set_xlabel("Services")
        ax.set_ylabel("microseconds")
        ax.set_title(f"first packet {q}")
        ax.grid(True, alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left")
    fig.suptitle("First packet through late Services: the post (dashed) and this machine (solid; bars: 95 % "
                 "bootstrap intervals, bands: repeats)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(runs: list[tuple[str, dict]], out: Path) -> Path:
    """published-first-packet.md and .png into `out`; returns the Markdown file."""
    pts = points(runs)
    if not pts:
        raise ValueError("none of the runs has first-packet timings in microseconds (connect_us); "
                         "runs before 2026-12-03 lack them")
    out.mkdir(parents=True, exist_ok=True)
    chart(pts, out / "published-first-packet.png")
    md = out / "published-first-packet.md"
    md.write_text(render(pts) + "\n![published-first-packet.png](published-first-packet.png)\n")
    return md
