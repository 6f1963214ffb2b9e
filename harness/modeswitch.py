"""E16's own cluster: the mode-change experiment changes kube-proxy for everyone, so it gets a
small cluster of the base cluster's mode and engine (switch_cluster) and changes modes there
(SwitchBench)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from . import assembly, runstate
from .cluster import KindCluster, claim_name
from .lab import ClusterHandle
from .owners import run_owner
from .session import record_created


class SwitchBench:
    """A small cluster of its own for the mode-change experiment (it changes kube-proxy for everyone)."""

    def __init__(self, cluster: ClusterHandle, lab, target_mode: str):
        self.cluster, self.lab, self.target_mode = cluster, lab, target_mode

    def change_mode(self, mode: str):
        """Yields each restart step once the restarted kube-proxy runs `mode` and is in sync."""
        from . import modes
        from .waits import Wait
        restart = not any(b.skip_restart for b in self.cluster.breaks)
        for node_name, step in modes.change_mode(self.cluster.kube, mode, restart=restart):
            node = self.cluster.node(node_name)
            Wait(f"kube-proxy on {node_name} to run {mode} and report healthy").until(
                lambda: (modes.endpoint_mode(node), modes.healthz(node)), lambda s: s == (mode, "200"))
            yield step
        self.cluster.mode = self.lab.mode = mode


@contextlib.contextmanager
def switch_cluster(pyconfig: pytest.Config, base: ClusterHandle):
    """E16's cluster of its own: the base cluster's mode and engine, the smallest shape."""
    from .lab import Lab
    opts = pyconfig.option
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    run_dir: Path = runstate.of(pyconfig).run_dir
    owner = run_owner(run_dir)
    eng = base.kind.engine
    name = claim_name(f"{base.name}-switch-{worker}"[:50], owner, eng)
    out = None
    try:
        out = assembly.build(assembly.Recipe(
            name=name, mode=base.mode, engine=eng, owner=owner, run_key=run_dir.name,
            workers=eng.smallest_workers, node_image=opts.node_image or "",
            demo_image=opts.demo_image or ""), on_created=lambda n: record_created(run_dir, n))
        handle = out.handle(base.mode, worker, breaks=base.breaks)
        lab = Lab(handle, "mode-switch")
        handle.kube.create_namespace(lab.ns)
        from . import modes
        target = modes.other_mode(base.mode)
        yield SwitchBench(handle, lab, target)
        handle.close()
    finally:
        KindCluster.ours(name, owner).delete()
