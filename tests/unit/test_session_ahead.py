"""harness.session: a worker that would wait for another's cluster makes the run's next one meanwhile."""
import threading
from types import SimpleNamespace

import pytest
from filelock import FileLock

from harness import runstate, session
from harness.owners import write_json


def test_in_progress_is_a_held_lock_without_a_result(tmp_path):
    assert not runstate.in_progress(tmp_path, "cluster-iptables")
    with FileLock(str(tmp_path / "cluster-iptables.lock")):  # another worker making it
        assert runstate.in_progress(tmp_path, "cluster-iptables")
    runstate.run_once(tmp_path, "cluster-iptables", lambda: {"name": "c"})
    assert not runstate.in_progress(tmp_path, "cluster-iptables")


def test_run_once_does_something_else_while_another_caller_holds_the_lock(tmp_path):
    held, release = threading.Event(), threading.Event()

    def other_worker():
        with FileLock(str(tmp_path / "cluster-iptables.lock")):
            held.set()
            release.wait(5)
            write_json(tmp_path / "cluster-iptables.json", {"name": "made-by-the-other"})
    t = threading.Thread(target=other_worker)
    t.start()
    held.wait(5)
    meanwhile = []
    state = runstate.run_once(tmp_path, "cluster-iptables", lambda: pytest.fail("made twice"),
                              meanwhile=lambda: (meanwhile.append("nftables"), release.set()))
    t.join()
    assert state == {"name": "made-by-the-other"} and meanwhile == ["nftables"]
    assert runstate.run_once(tmp_path, "cluster-nftables", lambda: {"name": "mine"},
                             meanwhile=lambda: pytest.fail("nobody held the lock")) == {"name": "mine"}


@pytest.fixture
def run(tmp_path, monkeypatch):
    """A run of two host modes and ipvs on a guest per worker; records which clusters _make made."""
    made = []

    def engine_for(opts, mode, slot, guests):
        return SimpleNamespace(cluster_suffix="", per_slot=mode == "ipvs", unavailable_reason=lambda m: "")

    def make(pyconfig, mode, eng):
        made.append(mode)
        if mode == "broken":
            raise RuntimeError("kind create failed")
        return {"name": f"c-{mode}"}
    monkeypatch.setattr(session, "_engine_for", engine_for)
    monkeypatch.setattr(session, "_make", make)
    pyconfig = SimpleNamespace(stash=pytest.Stash(), option=SimpleNamespace())
    runstate.of(pyconfig).run_dir = tmp_path
    return pyconfig, made


def test_the_next_mode_nobody_started_is_made_meanwhile(run, tmp_path):
    pyconfig, made = run
    session._make_next_meanwhile(pyconfig, "iptables", ["iptables", "nftables"], 0, 1)
    assert made == ["nftables"] and runstate.read_json(tmp_path / "cluster-nftables.json") == {"name": "c-nftables"}
    session._make_next_meanwhile(pyconfig, "iptables", ["iptables", "nftables"], 0, 1)  # done already: not again
    assert made == ["nftables"]


def test_nothing_is_made_ahead_for_the_last_mode_or_a_cluster_per_worker(run, tmp_path):
    pyconfig, made = run
    session._make_next_meanwhile(pyconfig, "nftables", ["iptables", "nftables"], 0, 1)
    session._make_next_meanwhile(pyconfig, "nftables", ["nftables", "ipvs"], 0, 2)
    with FileLock(str(tmp_path / "cluster-nftables.lock")):  # a third worker is at it already
        session._make_next_meanwhile(pyconfig, "iptables", ["iptables", "nftables"], 0, 1)
    assert made == []


def test_a_failure_ahead_is_left_for_that_modes_tests(run, tmp_path):
    pyconfig, made = run
    session._make_next_meanwhile(pyconfig, "iptables", ["iptables", "broken"], 0, 1)  # does not raise here
    with pytest.raises(runstate.OnceError, match="kind create failed"):
        runstate.run_once(tmp_path, "cluster-broken", lambda: pytest.fail("made twice"))
