"""harness.cluster.use: tests share a cluster; a cluster_wide test has it alone."""
import threading
import time

from harness.cluster import use


def _hold(path, exclusive, seconds, started):
    with use(path, exclusive):
        started.set()
        time.sleep(seconds)


def _time_to_claim(path, exclusive, holder_exclusive):
    started = threading.Event()
    t = threading.Thread(target=_hold, args=(path, holder_exclusive, 0.5, started))
    t.start()
    started.wait(5)
    t0 = time.monotonic()
    with use(path, exclusive):
        waited = time.monotonic() - t0
    t.join()
    return waited


def test_shared_claims_do_not_wait_for_each_other(tmp_path):
    assert _time_to_claim(tmp_path / "c.lock", exclusive=False, holder_exclusive=False) < 0.3


def test_exclusive_claim_waits_for_a_shared_one(tmp_path):
    assert _time_to_claim(tmp_path / "c.lock", exclusive=True, holder_exclusive=False) >= 0.4


def test_shared_claim_waits_for_an_exclusive_one(tmp_path):
    assert _time_to_claim(tmp_path / "c.lock", exclusive=False, holder_exclusive=True) >= 0.4
