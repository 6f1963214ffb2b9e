"""The command-line tools' shared conventions: pytest options after `--`, usage errors, names."""
import argparse
import os

import pytest

from harness import cli


def _parser():
    p = argparse.ArgumentParser(prog="t")
    p.add_argument("--only", default="")
    return p


def test_pytest_options_go_after_the_double_dash():
    args, extra = cli.parse_with_pytest_args(_parser(), ["--only=a", "--", "-k", "E04", "--lb-provider=none"])
    assert args.only == "a" and extra == ["-k", "E04", "--lb-provider=none"]
    assert cli.parse_with_pytest_args(_parser(), ["--only=b"])[1] == []


def test_an_unknown_option_before_the_double_dash_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_with_pytest_args(_parser(), ["--lb-provider=none"])
    assert e.value.code == 2 and "pytest options go after `--`" in capsys.readouterr().err


def test_bench_report_of_a_missing_file_is_a_usage_error_not_a_traceback(tmp_path, capsys):
    from harness.bench.__main__ import main
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "nope.json")])
    assert e.value.code == 2 and "cannot read" in capsys.readouterr().err


def test_breaks_refuses_a_stray_pytest_option(capsys):
    from harness.breaks import main
    with pytest.raises(SystemExit) as e:
        main(["prove", "--lb-provider=none"])
    assert e.value.code == 2


def test_tools_name_themselves_as_started(monkeypatch):
    monkeypatch.setattr("sys.argv", ["svc-harness bench"])
    assert cli.tool_prog("python -m harness.bench") == "svc-harness bench"
    monkeypatch.setattr("sys.argv", ["/x/harness/bench/__main__.py"])
    assert cli.tool_prog("python -m harness.bench") == "python -m harness.bench"


def test_clean_takes_dead_runs_and_their_abort_logs_but_not_a_live_runs(tmp_path):
    import json
    from harness.cli import stale_runs
    from harness.owners import Owner
    live, dead = Owner.of(), Owner(os.getpid(), "not-its-start-time", Owner.of().boot)
    for run_id, owner in (("live", live), ("dead", dead)):
        (tmp_path / run_id).mkdir()
        (tmp_path / run_id / "owner.json").write_text(json.dumps(owner.to_dict()))
        (tmp_path / f"abort-{run_id}.log").write_text("signal 15\n")
    (tmp_path / "abort-unknown.log").write_text("its run directory is gone\n")
    assert [p.name for p in stale_runs(tmp_path, force=False)] == ["abort-dead.log", "abort-unknown.log", "dead"]
    assert len(stale_runs(tmp_path, force=True)) == 5
