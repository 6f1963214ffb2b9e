"""python -m harness.guest build|up|down|status

  build [--force] [--when-needed] [--only kernel|rootfs]   the cached offline build
  (--when-needed: build and up do nothing where the host kernel has IPVS)
  up [--load [TAG ...]] [--guests N]
                           boot the guest engine (guests 0..N-1: a run with N xdist workers uses
                           N) and load host images into it (--load alone: the ones a run loads:
                           node image, demo app, toolbox); prints DOCKER_HOST
  down [--force]           clean halt of every guest, then kill; removes the links and guards
                           (refused while a live run holds a guest, unless --force)
  status                   is each guest running, where, which kernel, which runs hold it
"""
from __future__ import annotations

import argparse
import logging
import sys

from ..cli import add_kubernetes_version, tool_prog, use_kubernetes_version
from ..images import BuildError
from ..runner import CommandError
from .build import GuestBuilder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=tool_prog("python -m harness.guest"), description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["build", "up", "down", "status"])
    ap.add_argument("--force", action="store_true",
                    help="build: rebuild, ignoring the cache; down: halt even while other runs hold the guest")
    ap.add_argument("--when-needed", action="store_true",
                    help="build, up: do nothing when the host kernel has IPVS (then ipvs runs on the host engine)")
    ap.add_argument("--only", choices=["kernel", "rootfs"], help="build: just one of the two")
    ap.add_argument("--load", nargs="*", default=None, metavar="TAG",
                    help="up: host images to load into the guest (none named: the ones a run loads)")
    ap.add_argument("--guests", type=int, default=1, help="up: how many guests (default 1)")
    add_kubernetes_version(ap)  # up --load: whose node image
    ap.add_argument("-v", "--verbose", action="store_true", help="log every command")
    a = ap.parse_args(argv)
    use_kubernetes_version(ap, a.kubernetes_version)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from .vm import Guest, GuestConfig, GuestError
    try:
        if a.when_needed and a.command in ("build", "up"):
            from ..engine import ipvs_missing_reason
            if ipvs_missing_reason() is None:
                print("host kernel has IPVS: no guest needed")
                return 0
        if a.command == "build":
            art = GuestBuilder(force=a.force).build_all(only=a.only)
            print(f"guest kernel: {art.kernel}\nguest rootfs: {art.rootfs}")
        elif a.command == "up":
            from concurrent.futures import ThreadPoolExecutor
            from ..engine import GUEST_MEM_SHARED
            guests = [Guest(GuestConfig(index=index, **({"mem": GUEST_MEM_SHARED} if a.guests > 1 else {}))).up()
                      for index in range(a.guests)]
            if a.load is not None:
                if not a.load:
                    from ..assembly import resolve_images
                    node, images, _ = resolve_images()
                    a.load = [node, images.demoapp, images.toolbox]
                # Side by side: each guest unpacks on a host CPU of its own (a cold node image: ~4 min).
                with ThreadPoolExecutor(len(guests)) as pool:
                    for took in pool.map(lambda g: g.load_images(a.load), guests):
                        print(took)
            for g in guests:
                print(g.describe())
                print("\n".join(f"export {k}={v}" for k, v in g.docker_env().items()))
        else:
            from ..engine import every
            from .engine import GuestEngine
            refused = False
            for eng in every():
                if not isinstance(eng, GuestEngine):
                    continue
                g = eng.guest
                if a.command == "status":
                    holders = eng.leases.live()
                    print(f"{g.describe()}: {'running' if g.running() else 'not running'}"
                          + (f", dockerd answers on {g.docker_host} (TLS)" if g.running() and g.docker_answers() else "")
                          + (f"; held by {', '.join(f'{k} ({o})' for k, o in holders.items())}" if holders else ""))
                    continue
                with eng.leases.locked() as leases:
                    holders = leases.live()
                    if holders and not a.force:
                        print(f"guest down: refused for {g.cfg.name}, live runs hold it: "
                              f"{', '.join(f'{k} ({o})' for k, o in holders.items())}; --force halts it anyway",
                              file=sys.stderr)
                        refused = True
                        continue
                    g.down()
                    g.remove_link()
            if refused:
                return 1
    except (BuildError, CommandError, GuestError) as e:
        print(f"guest {a.command} failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
