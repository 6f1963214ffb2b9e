"""The run's timing table from its Steps (harness.progress)."""
import pytest


def test_steps_of_a_run_make_one_timing_table(tmp_path, monkeypatch):
    from harness import progress
    from harness.runner import Step
    steps = tmp_path / "steps.jsonl"
    monkeypatch.setenv(progress.STEPS_ENV, str(steps))
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    progress.record_step("creating kind cluster a", 52.3, True)
    progress.record_step("a short step", 0.4, True)
    with pytest.raises(RuntimeError), Step("loading images"):
        raise RuntimeError("boom")
    progress.record_step("loading images", 7.0, False)
    table = progress.step_table(steps)
    assert table[:2] == ["| ended | where | step | time | |", "|---|---|---|---|---|"]
    assert [r.split(" | ")[2:] for r in table[2:]] == [["creating kind cluster a", "52 s", "ok |"],
                                                       ["loading images", "7 s", "FAILED |"]]
    assert all("| gw1 |" in r for r in table[2:])
    assert progress.step_table(tmp_path / "none.jsonl") == []
