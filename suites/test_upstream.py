"""Upstream Kubernetes' own `[sig-network] Services` e2e specs, one result per spec and mode.

Collected only with --upstream-conformance; the specs are what --upstream-focus and
--upstream-skip select from e2e.test of the pinned Kubernetes version (a dry run,
before any cluster exists). A mode's specs run once, together, on that mode's
cluster (see harness/upstream/run.py); each item here then passes, fails or skips
as its spec did there, with upstream's failure message and a pointer to the log.
"""
import pytest

pytestmark = pytest.mark.upstream


def test_upstream(upstream_spec, upstream_run, upstream_recorder):
    """The upstream spec passes on this mode's cluster (its verdict in the mode's ginkgo report)."""
    upstream_run.check(upstream_spec, upstream_recorder)
