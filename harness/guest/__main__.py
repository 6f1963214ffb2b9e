"""python -m harness.guest build [--force]: build (or find cached) the guest kernel and rootfs."""
from __future__ import annotations

import argparse
import logging
import sys

from ..images import BuildError
from ..runner import CommandError
from .build import GuestBuilder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.guest")
    ap.add_argument("command", choices=["build"])
    ap.add_argument("--force", action="store_true", help="rebuild, ignoring the cache")
    ap.add_argument("--when-needed", action="store_true",
                    help="do nothing when the host kernel has IPVS (then ipvs runs on the host engine)")
    ap.add_argument("--only", choices=["kernel", "rootfs"], help="build just one of the two")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every command")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO, format="%(message)s")
    if a.when_needed:
        from ..engine import ipvs_missing_reason
        if ipvs_missing_reason() is None:
            print("host kernel has IPVS: no guest needed")
            return 0
    try:
        art = GuestBuilder(force=a.force).build_all(only=a.only)
    except (BuildError, CommandError) as e:
        print(f"guest build failed: {e}", file=sys.stderr)
        return 1
    print(f"guest kernel: {art.kernel}\nguest rootfs: {art.rootfs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
