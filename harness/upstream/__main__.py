"""python -m harness.upstream build|list [--upstream-focus REGEX] [--upstream-skip REGEX]"""
from __future__ import annotations

import argparse
import logging
import sys
import time

from ..cli import add_kubernetes_version, tool_prog, use_kubernetes_version
from ..images import BuildError
from ..runner import CommandError
from . import build, specs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=tool_prog("python -m harness.upstream"),
                                 description="upstream Kubernetes Services e2e specs (see harness/upstream)")
    ap.add_argument("command", choices=["build", "list"],
                    help="build: e2e.test, ginkgo and the agnhost image (cached); list: the selected specs")
    # The names of pytest's options (--focus/--skip: older spellings).
    ap.add_argument("--upstream-focus", "--focus", dest="focus", default=specs.DEFAULT_FOCUS,
                    help="ginkgo focus regex, or 'smoke' (as pytest's --upstream-focus)")
    ap.add_argument("--upstream-skip", "--skip", dest="skip", default=specs.DEFAULT_SKIP,
                    help="ginkgo skip regex (as pytest's --upstream-skip)")
    ap.add_argument("--force", action="store_true", help="rebuild, ignoring caches")
    add_kubernetes_version(ap)
    a = ap.parse_args(argv)
    use_kubernetes_version(ap, a.kubernetes_version)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.monotonic()
    try:
        bins = build.ensure(force=a.force)
        if a.command == "list":
            names = specs.list_specs(bins["e2e.test"], specs.focus_expression(a.focus), a.skip)
            for s in specs.to_specs(names):
                print(f"{s.id}\t{s.name}")
            print(f"{len(names)} specs", file=sys.stderr)
    except (BuildError, CommandError) as e:
        print(f"upstream: {e}", file=sys.stderr)
        return 1
    print(f"upstream: {a.command} done in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
