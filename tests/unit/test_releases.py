"""Several Kubernetes releases in one command (harness.releases): arguments, exit code, matrix."""
import json
import sys
from pathlib import Path

import pytest

from harness import config, releases
from harness.gate import Gate
from harness.report import Evidence, Recorder, write_report
from harness.runner import FakeRunner


def test_a_comma_list_names_known_minors_once_in_order():
    assert releases.requested("1.37, v1.36,1.37") == ["1.37", "1.36"]
    with pytest.raises(ValueError, match="no pins"):
        releases.requested("1.37,1.99")


def test_each_release_gets_its_own_artifacts_prefix_and_junit():
    args = ["suites/", "--proxy-mode=iptables", "--kubernetes-version", "1.36,1.37", "--artifacts-dir=out",
            "-n", "2", "--junitxml=ci/junit.xml"]
    out = releases.child_args(args, "1.36", Path("/a/k8s-1.36"))
    assert out == ["suites/", "--proxy-mode=iptables", "-n", "2", "--kubernetes-version=1.36",
                   "--artifacts-dir=/a/k8s-1.36", "--cluster-prefix=svc-harness-v136", "--junitxml=/a/k8s-1.36/junit.xml"]
    custom = releases.child_args(["--cluster-prefix", "ci", "--kubernetes-version=1.35,1.36"], "1.35", Path("x"))
    assert "--cluster-prefix=ci-v135" in custom and "ci" not in custom


def test_a_prefix_with_no_room_for_the_release_is_refused():
    with pytest.raises(ValueError, match="must fit"):
        releases.cluster_prefix("p" * config.CLUSTER_PREFIX_MAX, "1.37")


def test_a_failure_in_any_release_fails_the_whole():
    assert releases.exit_code([0, 0]) == 0
    assert releases.exit_code([0, 6, 1]) == 1
    assert releases.exit_code([0, 6]) == 6


def _finished(directory: Path, minor: str, mode: str, verdict: str, monkeypatch) -> None:
    """What a release's pytest run leaves: its evidence and report.json with the gate."""
    monkeypatch.setenv(config.K8S_VERSION_ENV, minor)
    Recorder(directory, "gw0").record(Evidence("E04", mode, "spread", "c", "a", [], verdict))
    gate = Gate(requested=[mode])
    gate.record(mode, "call", "passed" if verdict == "pass" else "failed")
    write_report(directory, gate)
    monkeypatch.delenv(config.K8S_VERSION_ENV)


def test_runs_each_release_and_writes_a_release_by_mode_matrix(tmp_path, monkeypatch):
    _finished(tmp_path / "k8s-1.36", "1.36", "nftables", "pass", monkeypatch)
    _finished(tmp_path / "k8s-1.37", "1.37", "nftables", "fail", monkeypatch)
    runner = FakeRunner().on(lambda argv: "--kubernetes-version=1.37" in argv, returncode=1)
    code = releases.run_each(["1.36", "1.37"], ["suites/", "--kubernetes-version=1.36,1.37"], tmp_path,
                             tmp_path, runner)
    assert code == 1
    assert [c[:3] for c in runner.calls] == [[sys.executable, "-m", "pytest"]] * 2
    md = (tmp_path / "report.md").read_text()
    v136, v137 = config.versions("1.36")["KUBERNETES_VERSION"], config.versions("1.37")["KUBERNETES_VERSION"]
    assert f"| Experiment | {v136} nftables | {v137} nftables |" in md
    assert "| E04: spread | PASS | FAIL |" in md
    assert f"- {v137} nftables: FAIL (0 passed, 1 failed, 0 skipped)" in md
    data = json.loads((tmp_path / releases.MATRIX_JSON).read_text())
    assert [r["exit"] for r in data["releases"]] == [0, 1]
    assert data["experiments"][0]["verdicts"] == {v136: {"nftables": "pass"}, v137: {"nftables": "fail"}}


def test_a_usage_error_stops_the_series_and_says_what_did_not_start(tmp_path):
    runner = FakeRunner().on(lambda argv: True, returncode=4)
    assert releases.run_each(["1.36", "1.37"], ["suites/"], tmp_path, tmp_path, runner) == 4
    assert len(runner.calls) == 1
    md = (tmp_path / "report.md").read_text()
    assert "no report.json" in md and "**1.37**: not started" in md


def test_a_sigterm_to_the_series_reaches_the_release_run_which_cleans_up():
    from harness.runner import Runner
    # The child signals its parent (this process), as a CI timeout would; the parent passes it on.
    child = "trap 'exit 7' TERM; kill -TERM $PPID; sleep 20 & wait"
    res = Runner().run(["bash", "-c", child], passthrough=True, check=False, timeout=30)
    assert res.returncode == 7 and res.seconds < 10


@pytest.mark.parametrize("extra, says", [(["--node-image=x"], "one release's node image"),
                                         (["--kubernetes-version=1.36,1.99"], "no pins for it")])
def test_what_cannot_hold_for_several_releases_is_a_usage_error_before_any_run(extra, says, tmp_path):
    import subprocess
    argv = [sys.executable, "-m", "pytest", "tests/unit/test_releases.py::test_a_failure_in_any_release_fails_the_whole",
            "-p", "no:cacheprovider", "--kubernetes-version=1.36,1.37", f"--artifacts-dir={tmp_path}", *extra]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=config.REPO)
    assert res.returncode == 4 and says in res.stderr + res.stdout
    assert not list(tmp_path.iterdir())  # nothing ran, nothing written
