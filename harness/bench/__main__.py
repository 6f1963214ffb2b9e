"""Entry point of the benchmarks.

    python -m harness.bench scale --proxy-mode=iptables,nftables --services=100,1000,5000 --repeats=2
    python -m harness.bench report artifacts/bench/results.json   # redraw table and charts
    python -m harness.bench published RUN/results.json ... --out DIR   # the nftables post's chart beside runs

Writes artifacts/bench/results.json (every raw sample), results.md and PNG charts.
Clusters it creates are deleted at the end, also after Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from ..cli import add_kubernetes_version, tool_prog, use_kubernetes_version
from .. import config, engine
from . import firstpacket, published, results, scale


def _modes(text: str) -> list[str]:
    modes = [m.strip().lower() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in config.PROXY_MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"unknown proxy mode(s) {bad}; expected some of {', '.join(config.PROXY_MODES)}")
    return list(dict.fromkeys(modes))


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--services: expected comma-separated whole numbers, got {text!r}") from None
    if not sizes or sizes[0] < 1 or sizes[-1] > 30000:
        raise argparse.ArgumentTypeError(f"--services: sizes between 1 and 30000, got {text!r}")
    return sizes


def _guest(text: str) -> int:
    try:
        return engine.guest_number(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=tool_prog("python -m harness.bench"), description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("scale", help="programming and first-packet latency against the number of Services")
    s.add_argument("--proxy-mode", type=_modes, default=["iptables", "nftables"])
    s.add_argument("--services", type=_sizes, default=[100, 1000, 5000], help="sizes, e.g. 100,1000,5000")
    s.add_argument("--repeats", type=int, default=2)
    s.add_argument("--probes", type=int, default=10, help="programming-latency samples per size and repeat")
    s.add_argument("--fp-services", type=int, default=3, help="early and late Services sampled for first packet")
    s.add_argument("--fp-requests", type=int, default=30, help="requests per first-packet target")
    s.add_argument("--fp-connects", type=int, default=1000,
                   help="timed new connections per first-packet target (microseconds, connect to SYN-ACK)")
    s.add_argument("--slow-rules", type=int, default=firstpacket.SLOW_RULES,
                   help="rules of the slowed path the probe must detect before measuring (0: skip that check)")
    s.add_argument("--cluster-prefix", default="bench", help="prefix; the mode is appended")
    s.add_argument("--worker-nodes", type=int, default=1, help="worker nodes (fewer kube-proxies compete for CPU)")
    s.add_argument("--artifacts-dir", "--out", dest="out", type=Path, default=Path("artifacts/bench"),
                   help="where results.json, results.md and the charts go (default: artifacts/bench)")
    s.add_argument("--create-workers", type=int, default=8,
                   help="parallel API calls when creating or deleting Services in bulk (1..32)")
    s.add_argument("--keep-clusters", action="store_true")
    s.add_argument("--ipvs-engine", choices=["auto", "host", "guest"], default="auto",
                   help="where ipvs clusters run: auto = the UML guest when the host kernel lacks IPVS")
    s.add_argument("--max-load", type=float, default=None,
                   help="before each first-packet measurement, wait (up to 10 min) until the 1-minute load "
                        "average is at most this; samples taken above it are flagged (default: no wait)")
    s.add_argument("--no-restart-sync", dest="restart_sync", action="store_false",
                   help="skip restarting kube-proxy at each size to time its first sync")
    s.add_argument("--all-modes-in-guest", action="store_true",
                   help="every mode's cluster in the UML guest engine: the three modes on one kernel")
    s.add_argument("--guest", type=_guest, default=0,
                   help="which UML guest clusters in the guest run in, numbered as `harness.guest up --guests N` "
                        "boots them (0: svc-harness-guest, 1: svc-harness-guest-2, ...): two benchmarks at once "
                        "each take their own")
    add_kubernetes_version(s)
    r = sub.add_parser("report", help="redraw results.md and the charts from a results.json")
    r.add_argument("results", type=Path)
    pub = sub.add_parser("published", help="the nftables post's first-packet chart beside runs' results.json")
    pub.add_argument("results", type=Path, nargs="+", help="results.json of runs; each is labelled by its directory")
    pub.add_argument("--out", type=Path, required=True, help="where published-first-packet.md and .png go")
    return p


def _read_results(p: argparse.ArgumentParser, path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        p.error(f"cannot read {path} as a results.json ({e}); a bench run writes it to <--artifacts-dir>/results.json")


def _interrupt(signum, frame):
    # SIGTERM unwinds like Ctrl-C, so the finally blocks delete the clusters this run made.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    use_kubernetes_version(p, getattr(args, "kubernetes_version", None))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if args.command == "report":
        md = results.write_report(_read_results(p, args.results), args.results.parent)
        print(md.read_text())
        return 0
    if args.command == "published":
        runs = [(path.resolve().parent.name, _read_results(p, path)) for path in args.results]
        try:
            md = published.write(runs, args.out)
        except ValueError as e:
            p.error(f"published: {e}")
        print(md.read_text())
        return 0
    if args.repeats < 1 or args.probes < 1 or args.fp_requests < 1 or args.fp_requests > 1000:
        print("--repeats, --probes and --fp-requests (<= 1000) must be at least 1", file=sys.stderr)
        return 2
    if not 1 <= args.create_workers <= 32:
        print(f"--create-workers must be 1..32 (got {args.create_workers})", file=sys.stderr)
        return 2
    if not 20 <= args.fp_connects <= 100000 or not 0 <= args.slow_rules <= 100000:
        print(f"--fp-connects must be 20..100000 (got {args.fp_connects}) and --slow-rules 0..100000 "
              f"(got {args.slow_rules})", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    opts = scale.Options(modes=args.proxy_mode, sizes=args.services, repeats=args.repeats, probes=args.probes,
                         fp_services=args.fp_services, fp_requests=args.fp_requests,
                         fp_connects=args.fp_connects, slow_rules=args.slow_rules,
                         cluster_prefix=args.cluster_prefix, worker_nodes=args.worker_nodes, out=args.out,
                         keep_clusters=args.keep_clusters, engine=args.ipvs_engine,
                         all_in_guest=args.all_modes_in_guest, guest=args.guest, max_load=args.max_load,
                         restart_sync=args.restart_sync, create_workers=args.create_workers)
    data = scale.run(opts)
    md, js = results.write(data, opts.out)
    print(md.read_text())
    print(f"svc-harness bench: {js} (raw samples), {md}; run time {data['seconds']:.0f}s")
    # A benchmark of Services that did not answer measured nothing: say so and fail. Connections straight
    # to the pod IP (the baseline) fail too, except in ipvs mode, where a known IPVS fault explains
    # them (results.POD_FAILURES): those are reported, and the Services' own answers still count.
    rows = results.summarise(data)
    failed = [f"{r['mode']} {r['size']}: {r['programming_failed']} new Service(s) never answered, "
              f"{r['fp_failed']} first-packet request(s) failed"
              + (f" ({'; '.join(f'{k} x{n}' for k, n in r['fp_failed_detail'].items())})" if r["fp_failed"] else "")
              + (f", {r['fp_pod_failed']} to the pod IP" if r["fp_pod_failed"] else "")
              for r in rows if r["programming_failed"] or r["fp_failed"] or (r["fp_pod_failed"] and r["mode"] != "ipvs")]
    # A probe that cannot see a path made slower on purpose cannot be trusted with the real one.
    failed += [f"{m['mode']}: the first-packet probe did not see {m['resolution']['slow_rules']} extra rules: "
               + results.slowed_rounds_text(m["resolution"])
               for m in data["modes"] if m.get("resolution", {}).get("detected") is False]
    for line in failed:
        print(f"svc-harness bench: FAILED {line} (raw records in {js})", file=sys.stderr)
    for r in rows:
        if r["fp_pod_failed"] and r["mode"] == "ipvs":
            print(f"svc-harness bench: note: {r['mode']} {r['size']}: {r['fp_pod_failed']} connection(s) straight to "
                  f"the pod IP (the baseline, not a Service) failed: {results.POD_FAILURES}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
